"""Mixture-of-Depths (Raposo et al. 2024): a pretrained model is converted so that every `every`-th decoder block
(never the first, nor `dense_ends` blocks at each end) processes only the tokens its router picks, `capacity` of each
sequence in training; the rest skip the block along the residual stream. Every weight trains, as in `full`, plus the
routers. The architecture (routers, the inference threshold, saving and reloading) lives in `tuneforge.models.mod`,
because loading a saved model must rebuild it and models/ cannot import methods/.

Why capacity 0.5 by default, not the paper's 0.125: the paper trains routed models from scratch. A converted model
learned to use every block on every token, so every dropped token costs before the routers have learned anything:
on SmolLM2-135M with random routers over blocks 3..27 the loss of 16 identity conversations went from 4.55 to 6.29
at capacity 0.5 and 7.5 at 0.25 (the paper's 0.125 over all odd blocks: 13.9). Half the tokens keeps most of the
model's function, leaves fine-tuning less to rebuild, and still halves the attention and MLP work of the routed
blocks in training; lower it once a run shows the model tolerates it. The measurements behind `dense_ends` are in
tuneforge.models.mod."""

from __future__ import annotations

from pydantic import Field

from tuneforge.methods.base import Method, MethodParams


class MixtureOfDepthsParams(MethodParams):
    capacity: float = Field(0.5, gt=0, le=1, description="share of each sequence's tokens a routed block processes "
                                                         "in training (the paper: 0.125 when training from scratch)")
    every: int = Field(2, ge=1, description="route every Nth decoder block, counting from the second (2: blocks "
                                            "1, 3, 5, ...); the first block always runs")
    dense_ends: int = Field(2, ge=0, description="blocks at each end of the stack that are never routed (as many as "
                                                 "the model can spare: a 2-block model routes block 1)")


class MixtureOfDepthsMethod(Method):
    name = "mixture_of_depths"
    description = ("every Nth block processes only the tokens a trained router picks (Mixture-of-Depths); all "
                   "weights train")
    Params = MixtureOfDepthsParams
    # A whole model, but not a plain one: without tuneforge's loader its routers are dropped, so nothing merges it
    # into (or exports it as) a standard checkpoint.
    mergeable = False
    base_lr = 2e-5

    def apply(self, model, params, *, total_steps: int = 0, tok=None):
        from tuneforge.models.mod import convert

        convert(model, params.capacity, params.every, params.dense_ends)
        for p in model.parameters():
            p.requires_grad_(True)
        return model

    def estimate_trainable(self, shape, params) -> int:
        from tuneforge.models.mod import routed_indices

        routed = routed_indices(shape.n_layers, params.every, params.dense_ends)
        return shape.n_params + len(routed) * (shape.hidden + 1)
