"""Split specs: a split name, or the `datasets` slice syntax (`validation[:50%]`, `train[:2000]`, `train+validation`).

`datasets` parses a spec (`ReadInstruction.from_spec`) and turns it into absolute row ranges of its base splits
(`to_absolute`); hfsoup takes those ranges from it rather than re-implementing the grammar, and keeps them: every row
of a loaded spec is known as `(base split, row in that split)`, so a held-out and a reported part given as two specs
can be checked for shared rows (`validation[:60%]` and `validation[50%:]` share 10% of validation).

Example:
    ```py
    >>> spec = parse_split("train[:10%]+validation[2:-1]")
    >>> spec.bases, spec.ranges({"train": 30, "validation": 10})
    (('train', 'validation'), [('train', 0, 3), ('validation', 2, 9)])
    ```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import EvaluationError
from ..scrub import cut

#: Longer specs are refused before `datasets` parses them: a split spec is a few names and slices.
MAX_SPEC_CHARS = 200
#: What a split option takes, as every refusal says.
EXPECTED = "a split name, or a datasets slice such as validation[:50%], train[:2000] or train+validation"
# Characters that make a spec more than a name: a name alone keeps today's meaning (MNLI's `validation` is two splits).
_SLICING = "[]+()"


@dataclass(frozen=True)
class SplitSpec:
    """A parsed split spec.

    Attributes:
        text (`str`): the spec as given (what outputs record).
        bases (`tuple[str, ...]`): the base splits it reads, in order (a base may repeat: `train[:5]+train[-5:]`).
        instruction (`datasets.ReadInstruction`, *optional*): its slices; `None` for a plain split name.
    """

    text: str
    bases: tuple[str, ...]
    instruction: Any = None

    @property
    def sliced(self) -> bool:
        return self.instruction is not None

    def ranges(self, sizes: dict[str, int]) -> list[tuple[str, int, int]]:
        """`(base, start, stop)` for each `+`-part, as `datasets` reads them, from the number of rows of each base.

        Raises:
            `EvaluationError`: a part that selects no rows, or a rounding `datasets` refuses for these sizes.
        """
        if self.instruction is None:
            return [(base, 0, sizes[base]) for base in self.bases]
        try:
            absolute = self.instruction.to_absolute(sizes)
        except ValueError as exc:  # pct1_dropremainder on a split of under 100 rows
            raise _malformed(self.text, str(exc)) from None
        out = [(a.splitname, a.from_, a.to) for a in absolute]
        for (base, start, stop), part in zip(out, self.text.split("+"), strict=False):
            if stop <= start:
                raise EvaluationError(
                    f"Split {self.text!r} selects no rows of {base} (rows {start}:{stop} of its {sizes[base]}, "
                    f"from {part.strip()!r}).",
                    fix=f"Give a slice with rows in it: {EXPECTED}.",
                )
        return out


def parse_split(spec: Any) -> SplitSpec:
    """Parse `spec` with `datasets`; a name without brackets or `+` is a plain split name (imports nothing).

    Raises:
        `EvaluationError`: not a string, too long, or not in the `datasets` split syntax (`validation[abc]`,
        `validation[:150%]`).
    """
    if not isinstance(spec, str) or not spec.strip():
        raise EvaluationError(f"Expected {EXPECTED} as a split; got {cut(repr(spec), 80)}.", fix=_FIX)
    if len(spec) > MAX_SPEC_CHARS:
        raise EvaluationError(
            f"Expected {EXPECTED} as a split; got a spec of {len(spec)} characters ({cut(spec, 60)}), more "
            f"than the {MAX_SPEC_CHARS} a split spec may have.",
            fix=_FIX,
        )
    if not any(c in spec for c in _SLICING):
        return SplitSpec(spec, (spec,))
    from datasets.arrow_reader import ReadInstruction

    try:
        instruction = ReadInstruction.from_spec(spec)
    except ValueError as exc:
        raise _malformed(spec, str(exc)) from None
    bases = tuple(r.splitname for r in instruction._relative_instructions)  # no public accessor in datasets
    return SplitSpec(spec, bases, instruction)


def split_problem(value: Any) -> str | None:
    """Why `value` is not a split spec, or None (for option checks that list problems instead of raising)."""
    try:
        parse_split(value)
    except EvaluationError as exc:
        return exc.message
    return None


def base_split(spec: str) -> str:
    """The first base split a spec reads (`validation[50%:]` -> `validation`): where a data file given without a
    split name belongs."""
    return spec.split("+", 1)[0].split("[", 1)[0].split("(", 1)[0].strip() or spec


_FIX = "Pass a split such as validation, or a slice of one: validation[:50%], validation[50%:], train[:2000]."


def _malformed(spec: str, why: str) -> EvaluationError:
    return EvaluationError(
        f"Split {cut(spec, MAX_SPEC_CHARS)!r} is not {EXPECTED} ({cut(why, 200)}); percentages go from -100% to "
        "100%, row numbers are integers.",
        fix=_FIX,
    )


def is_sliced(spec: str) -> bool:
    """Whether `spec` is more than a split name (slices or `+`); checks characters only, parses nothing."""
    return any(c in spec for c in _SLICING)
