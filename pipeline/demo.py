"""`make demo`: the whole job on the embedded default, one stage after another, printing where everything is."""

from __future__ import annotations

import argparse
import time

from pipeline.config import add_config_arguments, load_config
from pipeline.diffusion import generate, load_pipeline


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = cfg.output_dir
    out.mkdir(parents=True, exist_ok=True)

    t0 = time.perf_counter()
    pipe = load_pipeline(cfg.model, scheduler=cfg.generation.scheduler)
    print(f"[model] {cfg.model.pretrained} loaded in {time.perf_counter() - t0:.1f}s")
    t0 = time.perf_counter()
    sample = generate(pipe, ["a red circle on a blue background"] * 4, [0, 1, 2, 3], cfg.generation)
    for i, image in enumerate(sample.images):
        image.save(out / f"sample_{i}.png")
    print(f"[sample] 4 images in {time.perf_counter() - t0:.2f}s → {out}/sample_*.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
