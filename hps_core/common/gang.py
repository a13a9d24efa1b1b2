"""Where a step's task sits in a multi-node gang: ``[resources.<step>] nodes > 1`` runs the step as a Metaflow
``@parallel`` gang, one task per node, and the training stage as one torchrun job across them
(``hps_core.train.launch``). Node 0 is the gang's main node: its host is torchrun's rendezvous and it alone
logs, saves and publishes; the other nodes' ranks only train."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gang:
    nodes: int = 1  # tasks in the gang (Metaflow's current.parallel.num_nodes); 1 = not a gang
    node_index: int = 0  # this task's node (current.parallel.node_index)
    main_addr: str = "127.0.0.1"  # node 0's address (current.parallel.main_ip)

    @property
    def is_main(self) -> bool:
        return self.node_index == 0
