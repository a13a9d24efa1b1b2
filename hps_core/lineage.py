"""``python -m hps_core.lineage ...``: the lineage walk's first command line, kept working (the same as
``hps lineage ...``). The module's code moved: the record to ``hps_core.registry.lineage``, the walk to
``hps_core.registry.lineage_walk``, the file digests to ``hps_core.common.digests``."""

import sys

MOVED = {"file_sha256": "hps_core.common.digests", "json_digest": "hps_core.common.digests",
         "code_version": "hps_core.common.digests"}


def __getattr__(name: str):
    where = MOVED.get(name, "hps_core.registry.lineage (the record) or hps_core.registry.lineage_walk (the walk)")
    raise AttributeError(f"hps_core.lineage.{name} has moved: import it from {where}")


if __name__ == "__main__":
    from hps_core.registry.lineage_walk import main

    sys.exit(main())
