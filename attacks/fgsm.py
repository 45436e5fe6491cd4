"""FGSM (Goodfellow et al., 2015): one signed-gradient step of size eps, L-inf.

x' = clip_[0,1](x + eps * sign(grad_x loss)). Untargeted by default; targeted mode
steps down the loss toward the target class.
"""

from .base import Attack, as_eps, project_linf
from .losses import loss_param
from .registry import register_attack


@register_attack
class FGSM(Attack):
    name = "fgsm"
    norm = "linf"
    flag = "--fgsm"
    label = "FGSM"
    summary = "one signed-gradient step of size eps"
    params = (loss_param(),)

    def perturb(self, x, y, target):
        eps = as_eps(self.eps, x)
        grad = self.input_grad(x, y, target)
        return project_linf(x + eps * grad.sign(), x, eps), None
