"""Which network SR4IR updates at which step, from what input: shared by the segmentation and
detection tests (the method's update pattern must not depend on the task)."""

from __future__ import annotations

import torch

# (S moves, T moves) at steps 1..4 with stage 0.5 (split after step 2)
EXPECTED_UPDATES = [
    ("s_then_t", [(True, False), (True, False), (False, True), (False, True)]),
    ("t_then_s", [(False, True), (False, True), (True, False), (True, False)]),
    ("joint", [(True, True)] * 4),
    ("lr_t", [(True, True)] * 4),
    ("hr_t", [(True, True)] * 4),
    ("sr4ir", [(True, True)] * 4),
]


def trace_updates(monkeypatch):
    """Per step: did S change, did T change, and what T trained on (recorded around the hooks)."""
    from attrsr.methods.sr4ir import SR4IR

    trace = []
    aug, after, inputs = SR4IR.augment, SR4IR.after_step, SR4IR._task_inputs

    def snap(net):
        return {k: v.clone() for k, v in net.state_dict().items() if v.is_floating_point()}

    def changed(net, before):
        return any(not torch.equal(v, before[k]) for k, v in net.state_dict().items() if k in before)

    def augment(self, batch, gen, rng):
        out = aug(self, batch, gen, rng)
        self._before = (snap(self.ctx.model), snap(self.task))
        self._seen = None
        return out

    def task_inputs(self, batch):
        xs = inputs(self, batch)
        self._seen = [x.clone() for x in xs]
        return xs

    def after_step(self, step):
        batch = self.batch
        s_moved = changed(self.ctx.model, self._before[0])  # the engine's step on S happened already
        after(self, step)
        trace.append({"step": step, "S": s_moved, "T": changed(self.task, self._before[1]), "batch": batch, "seen": self._seen})

    monkeypatch.setattr(SR4IR, "augment", augment)
    monkeypatch.setattr(SR4IR, "_task_inputs", task_inputs)
    monkeypatch.setattr(SR4IR, "after_step", after_step)
    return trace
