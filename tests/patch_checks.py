"""Patched-vs-library equality, shared by the patch tests of every model family."""
import torch

import fastswin


def randomized(model):
    with torch.no_grad():  # libraries zero-initialize biases and bias tables: randomize everything
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model


def flat_output(out):
    """One tensor of a model's output: a tensor, a list of stage outputs (MONAI's encoder)
    or a Hugging Face model output (its last_hidden_state)."""
    if torch.is_tensor(out):
        return out
    if isinstance(out, (list, tuple)):
        return torch.cat([o.flatten() for o in out])
    return out.last_hidden_state


def outputs_and_grads(model, x, seed=7, grads=True):
    model.zero_grad()
    torch.manual_seed(seed)  # the same drop path draws on both runs
    with torch.set_grad_enabled(grads):
        out = flat_output(model(x))
    if not grads:
        return out, {}
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_patch_matches(model, x, blocks, kind, backend=None, tolerance=1e-10, grads=True):
    """fastswin.patch replaces `blocks` modules of `kind` (the report's kind starts with it),
    all of them; the outputs and every parameter's gradient (grads) equal the library's; the state
    dict's keys and the parameters are untouched (BatchNorm statistics move in training)
    and unpatch restores every module."""
    want_out, want_grads = outputs_and_grads(model, x, grads=grads)
    keys, params = list(model.state_dict()), {k: v.clone() for k, v in model.named_parameters()}
    report = fastswin.patch(model, backend=backend)
    assert len(report.replaced) == blocks and report.complete, str(report)
    assert all(e.kind.startswith(kind) for e in report.replaced), str(report)
    got_out, got_grads = outputs_and_grads(model, x, grads=grads)
    torch.testing.assert_close(got_out, want_out, rtol=tolerance, atol=tolerance)
    assert got_grads.keys() == want_grads.keys()
    for name, grad in want_grads.items():
        torch.testing.assert_close(got_grads[name], grad, rtol=10 * tolerance, atol=tolerance, msg=name)
    assert list(model.state_dict()) == keys and all(torch.equal(v, params[k]) for k, v in model.named_parameters())
    assert len(fastswin.unpatch(model).replaced) == blocks
