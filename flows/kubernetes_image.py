"""Steps that run on Kubernetes use the config's container image (``[resources] image``).

``@kubernetes`` in the flow file would send a laptop's ``run`` to a cluster too, so the flow never names
it: ``argo-workflows create`` (or ``run --with kubernetes``) attaches it to every step, and this mutator
then gives that decorator the config's image. Metaflow re-runs step mutators after it late-attaches
``@kubernetes`` on deploy (metaflow#3238, 2.19.33+), which is what makes this work there.

Precedence: an image given on the command line (``--with kubernetes:image=...``) wins, then the config,
then Metaflow's ``METAFLOW_KUBERNETES_CONTAINER_IMAGE``. With ``image = ""`` nothing is changed.
"""

import os

from metaflow import FlowMutator, StepMutator


class _config_image_on_kubernetes(StepMutator):
    def init(self, image):
        self.image = image

    def mutate(self, mutable_step):
        specs = mutable_step.get_decorator_specs("kubernetes")
        if specs:
            attributes = specs[0][3]
            if not attributes.get("image"):
                mutable_step.add_decorator("kubernetes", deco_kwargs={**attributes, "image": self.image},
                                           duplicates=mutable_step.OVERRIDE)
        elif "METAFLOW_KUBERNETES_WORKLOAD" in os.environ:
            # Inside a Metaflow pod. The decorator added above is the mutator's own, so Argo does not pass it
            # to the pod with --with the way it passes a late-attached one; add it back here, as a @kubernetes
            # written in the flow file would be, so the pod keeps its log sidecar and pod metadata.
            mutable_step.add_decorator("kubernetes", deco_kwargs={"image": self.image})


class kubernetes_image(FlowMutator):
    """``@kubernetes_image(config_expr("config.resources.image"))``: see the module docstring."""

    def init(self, image):
        self.image = image

    def pre_mutate(self, mutable_flow):
        if not self.image:
            return
        for _, mutable_step in mutable_flow.steps:
            mutable_step.add_decorator(_config_image_on_kubernetes, deco_kwargs={"image": self.image})
