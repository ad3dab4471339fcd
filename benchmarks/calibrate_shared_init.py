"""Calibrate the shared-initialization threshold on data: siblings versus independently initialized impostors.

For every family (the tiny BERT, T5 and CLIP families; real all-MiniLM-L6-v2 fine-tunes on drug reviews with
`--minilm`) it prints, side by side, the body cosine similarity of weight matrices between fine-tunes of one base
("siblings"), of each fine-tune to the base, and of an independently initialized impostor of identical shape to
each of them, with the gap the threshold (`hfsoup.compat.MIN_BODY_COSINE`) must fall into.

    python benchmarks/calibrate_shared_init.py            # tiny families, ~20 s
    python benchmarks/calibrate_shared_init.py --minilm   # + real MiniLM fine-tunes (a few minutes; cached)
    python benchmarks/calibrate_shared_init.py --sampled  # the sampled estimate (`hfsoup find`, `check
                                                          # --skip-weights`): the same few kB slices it reads

Figures from one run on the 2-core CI machine (2026-11-28):

    family   siblings (min)  to base (min)  impostor (max |cos|)  threshold
    bert     0.9975          0.9987         0.0049                0.5
    t5       0.9975          0.9987         0.0006                0.5
    clip     0.9975          0.9987         0.0119                0.5
    minilm   0.9998          0.9998         0.0002                0.5

The sampled estimate (`--sampled`, same machine, 2026-12-03): siblings >= 0.9974 (bert 0.9976, t5 0.9974, clip
0.9975, minilm 1.0000), to base >= 0.9987, impostors <= 0.0581 (clip; bert 0.0040, t5 0.0112, minilm 0.0140).

The MiniLM fine-tunes train the top two encoder layers, the pooler and the head (the lower layers stay the base's),
so their whole-body similarity is near 1 partly by construction; the impostor, initialized independently, sits at 0.
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import numpy as np

from hfsoup.compat import MIN_BODY_COSINE, SimilarityMeter
from hfsoup.find.sampled import cosine, matching_name, plan_samples
from hfsoup.io.checkpoint import CheckpointReader
from hfsoup.soups.engine import BaseWeights, measure
from hfsoup.soups.kernels import widen


def sample(member: Path, reference: Path) -> np.ndarray:
    """The values the sampled estimate reads by Range requests (`find.sampled.plan_samples` on the reference's
    structure), read here from the local file: the same elements, float64."""
    with CheckpointReader(reference) as ref:
        plan, shapes = plan_samples(ref.structure), ref.structure
    values = []
    with CheckpointReader(member) as reader:
        for s in plan:
            name = matching_name(s.tensor, reader.structure)
            if name is None or reader.structure[name].shape != shapes[s.tensor].shape:
                raise SystemExit(f"{member} lacks {s.tensor} with the reference's shape")
            raw = np.asarray(reader.get_array(name)).reshape(-1)[s.first : s.first + s.count]
            values.append(widen(raw, reader.structure[name].dtype, np.dtype(np.float64)))
    return np.concatenate(values)


def sampled_similarities(members: list[Path], base: Path | None = None) -> list[list[float]]:
    """As `similarities`, from the sampled slices only (the base's plan; the first member's without a base)."""
    reference = base or members[0]
    values = [sample(m, reference) for m in members]
    if base is not None:
        ref = sample(base, reference)
        return [[cosine(v, ref) for v in values]]
    return [[cosine(a, b) for b in values] for a in values]


def similarities(members: list[Path], base: Path | None = None) -> list[list[float]]:
    readers = [CheckpointReader(m) for m in members]
    meter = SimilarityMeter([str(m) for m in members], base="base" if base else None)
    base_weights = BaseWeights.open(CheckpointReader(base), readers[0].structure) if base else None
    measure(readers, meter, base=base_weights)
    result = meter.result()
    return result.body_cosine if base is None else [result.body_cosine_to_base]


def calibrate(
    name: str, base: Path, finetunes: list[Path], impostor: Path, *, sampled: bool = False
) -> dict[str, float]:
    measure_ = sampled_similarities if sampled else similarities
    siblings = measure_(finetunes)
    sibling_min = min(siblings[i][j] for i, j in itertools.combinations(range(len(finetunes)), 2))
    to_base = min(measure_(finetunes, base)[0])
    impostor_max = max(abs(measure_([impostor, ft])[0][1]) for ft in [base, *finetunes])
    return {"family": name, "siblings": sibling_min, "to_base": to_base, "impostor": impostor_max}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minilm", action="store_true", help="also real all-MiniLM-L6-v2 fine-tunes (slow)")
    parser.add_argument(
        "--sampled", action="store_true", help="the sampled estimate (a few kB of the largest matrices)"
    )
    parser.add_argument("--cache", default=".hfsoup-bench-cache", help="where the MiniLM family is cached")
    args = parser.parse_args()

    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        from hfsoup.testing.families import build_family

        for kind in ("bert", "t5", "clip"):
            family = build_family(kind, Path(tmp) / kind)
            rows.append(
                calibrate(kind, family.base, family.finetunes, family.troublemakers["impostor"], sampled=args.sampled)
            )
        if args.minilm:
            from hfsoup.testing.minilm import build_minilm_family

            start = time.perf_counter()
            family = build_minilm_family(Path(args.cache) / "minilm", progress=print)
            print(f"MiniLM family ready in {time.perf_counter() - start:.0f} s")
            impostor = family.troublemakers["impostor"]
            rows.append(calibrate("minilm", family.base, family.finetunes, impostor, sampled=args.sampled))

    print(f"\n{'sampled estimate' if args.sampled else 'full measure'} (body cosine of weight matrices)")
    print(f"{'family':8} {'siblings (min)':>15} {'to base (min)':>14} {'impostor (max |cos|)':>21} {'threshold':>10}")
    for r in rows:
        print(f"{r['family']:8} {r['siblings']:15.4f} {r['to_base']:14.4f} {r['impostor']:21.4f} {MIN_BODY_COSINE:10}")
    lowest_sibling = min(min(r["siblings"], r["to_base"]) for r in rows)
    highest_impostor = max(r["impostor"] for r in rows)
    margin = min(lowest_sibling - MIN_BODY_COSINE, MIN_BODY_COSINE - highest_impostor)
    print(
        f"\ngap: impostors <= {highest_impostor:.4f} < threshold {MIN_BODY_COSINE} < {lowest_sibling:.4f} <= siblings"
        f"; smallest margin {margin:.4f}"
    )
    if margin <= 0:
        raise SystemExit("the threshold does not separate siblings from impostors on this data")


if __name__ == "__main__":
    main()
