"""BIM, the basic iterative method (Kurakin et al., 2017): PGD from the clean input.

x_{t+1} = Proj_{B_inf(x, eps) and [0,1]}(x_t + step_size * sign(grad)), x_0 = x, no random start.
Defaults as in the PCL/PC-LC papers: 10 iterations of eps/10.
"""

from workbench.attack_meta import Param

from .losses import loss_param
from .pgd import PGD
from .registry import register_attack


@register_attack
class BIM(PGD):
    name = "bim"
    flag = "--bim"
    label = "BIM"
    summary = "PGD from the clean input (no random start)"
    params = (Param("steps", int, 10, "iterations", minimum=1, option="steps"),
              Param("step_size", float, None, "step in pixels (auto: eps/10)", positive=True, option="step_size"),
              loss_param())

    def __init__(self, model, eps=8 / 255, steps: int = 10, step_size: float | None = None, **kwargs):
        kwargs.pop("random_start", None)
        super().__init__(model, eps, steps=steps, step_size=step_size, random_start=False, **kwargs)

    def _default_step(self, eps):
        return eps / 10
