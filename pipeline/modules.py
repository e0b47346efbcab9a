"""The three trained modules of stage two (docs/method.md): f_g, f_v and the matching classifier f_c.

Everything else (the text encoder, the ViT) is frozen and read from the cache, so these MLPs are the
whole model: a few hundred thousand parameters, small enough to train on a CPU.
"""
from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Sequential):
    """Linear -> GELU -> Linear, optionally followed by LayerNorm on the output."""

    def __init__(self, d_in: int, hidden: int, d_out: int, layernorm: bool = True):
        layers = [nn.Linear(d_in, hidden), nn.GELU(), nn.Linear(hidden, d_out)]
        if layernorm:
            layers.append(nn.LayerNorm(d_out))
        super().__init__(*layers)


class Matcher(nn.Module):
    """f_c on z = [h_0 ; g_0 ; v̄] -> one logit.

    The first layer is linear in the concatenation, so W·z = W_t·[h_0; g_0] + W_v·v̄: `pairwise`
    computes each caption's and each image's half once and adds them, which turns scoring C captions
    against N images from C·N full products into C + N of them (retrieval and hard negatives need it)."""

    def __init__(self, d_text: int, d_image: int, hidden: int):
        super().__init__()
        self.d_text = d_text
        self.fc1 = nn.Linear(d_text + d_image, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, t0: torch.Tensor, vbar: torch.Tensor) -> torch.Tensor:
        """Logits of aligned pairs: t0 (B, d_t+d_g), vbar (B, d_g) -> (B,)."""
        return self.fc2(self.act(self.fc1(torch.cat([t0, vbar], dim=-1)))).squeeze(-1)

    def pairwise(self, t0: torch.Tensor, vbar: torch.Tensor) -> torch.Tensor:
        """Logits of every caption with every image: t0 (A, d_t+d_g), vbar (N, d_g) -> (A, N)."""
        w_t, w_v = self.fc1.weight[:, : self.d_text], self.fc1.weight[:, self.d_text:]
        pre = (t0 @ w_t.T + self.fc1.bias)[:, None, :] + (vbar @ w_v.T)[None, :, :]
        return self.fc2(self.act(pre)).squeeze(-1)


class StageTwoModules(nn.Module):
    """The three modules stage two trains, together: f_g, f_v and f_c (what a checkpoint holds). Not an
    encoder: the exported model that runs text through the frozen encoder and f_g is
    grounded/hf_model.py's GroundedModel, which keeps f_g alone."""

    def __init__(self, d_t: int, d_v: int, d_g: int = 128, hidden: int = 512, layernorm: bool = True):
        super().__init__()
        self.dims = dict(d_t=d_t, d_v=d_v, d_g=d_g, hidden=hidden, layernorm=layernorm)
        self.f_g = MLP(d_t, hidden, d_g, layernorm)   # visual grounding: text token -> grounded embedding
        self.f_v = MLP(d_v, hidden, d_g, layernorm)   # image projection: patch / CLS token -> same space
        self.f_c = Matcher(d_t + d_g, d_g, hidden)

    @staticmethod
    def global_token(prefix: torch.Tensor, patches: torch.Tensor, *, class_token: bool) -> torch.Tensor:
        """p_0: the ViT's CLS token (first prefix token), or the patch mean when the cache has none: a CNN
        (P = 0), or a ViT whose prefix holds registers alone. `class_token` is the reader's: the cache's word
        on what prefix token 0 is, which its shape cannot tell (required, so no caller guesses)."""
        return prefix[:, 0] if class_token and prefix.shape[1] > 0 else patches.mean(dim=1)

    def text_global(self, h0: torch.Tensor) -> torch.Tensor:
        """t_0 = [h_0 ; f_g(h_0)], the [CLS] token's visual-textual embedding."""
        return torch.cat([h0, self.f_g(h0)], dim=-1)

    def forward(self, h: torch.Tensor, patches: torch.Tensor, p0: torch.Tensor):
        """h (B, n, d_t) token states with [CLS] at 0; patches (U, m, d_v); p0 (U, d_v).

        Returns g (B, n, d_g), v (U, m, d_g), t0 (B, d_t+d_g), vbar (U, d_g)."""
        g = self.f_g(h)
        v = self.f_v(patches)
        vbar = self.f_v(p0)
        t0 = torch.cat([h[:, 0], g[:, 0]], dim=-1)
        return g, v, t0, vbar
