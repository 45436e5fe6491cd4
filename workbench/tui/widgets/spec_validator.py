"""An Input validator from a field spec: the same parse the form uses, so the red mark and the message agree."""

from __future__ import annotations

from textual.validation import ValidationResult, Validator

from ..model.catalog import ParamSpec
from ..model.run_form import parse_value


class SpecValidator(Validator):
    def __init__(self, spec: ParamSpec) -> None:
        super().__init__()
        self.spec = spec

    def validate(self, value: str) -> ValidationResult:
        try:
            parse_value(self.spec, value)
        except ValueError as exc:
            return self.failure(str(exc))
        return self.success()
