"""What each flow's steps do, as plain functions (the flows only orchestrate them): ``hps`` (hps_flow),
``expansion`` (expand_flow and hps_flow's expand step), ``compare`` (compare_flow), ``routing``
(routing_flow), ``flow_run`` (what every flow's start and steps share)."""
