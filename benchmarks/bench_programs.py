"""Training programs a full HyperBand pass compiles, counted from its configurations (no training).

A program is one compiled training step: one per (activation, batch shape) of a model
architecture. Counted three ways for one pass at the original's R = 60, η = 3 (seed 0):

* ``processes``: a process per trial (the NNI engine): every trial compiles its own, or loads
  it from JAX's persistent cache when an earlier trial compiled the same one;
* ``in_process``: the local engine's ``ModelPool`` lends a compiled model to the next trial of
  the same architecture: one program per (activation, batch size);
* ``in_process_padded``: the same with batches padded to a power of two (at least 8) with
  masked samples (the jax loop's default on a GPU): one per (activation, padded size).

Which configurations a pass promotes depends on their losses, but every trial's configuration
is one of those drawn for its bracket's first rung, so the counts do not.

    .venv/bin/python benchmarks/bench_programs.py [--max-budget 60 --eta 3 --seed 0]
"""

from __future__ import annotations

import argparse
import json
import random

from seglib.hpo.hyperband import HyperBand


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-budget", type=int, default=60)
    parser.add_argument("--eta", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    from seglib.train.jax_loop import padded_size  # imports Keras and JAX: only when counting

    args = parse_args(argv)
    search = HyperBand(args.max_budget, args.eta, seed=args.seed)
    rng = random.Random(0)
    while (job := search.next_job()) is not None:
        search.report(job.parameter_id, rng.random())
    configs = [search.params(job) for job in search.jobs]
    result = {
        "max_budget": args.max_budget,
        "eta": args.eta,
        "seed": args.seed,
        "trials": len(configs),
        "configurations": len({job.config_id for job in search.jobs}),
        "processes": {
            "compiled_or_loaded": len(configs),
            "distinct": len({(c["activation"], c["batch_size"]) for c in configs}),
        },
        "in_process": len({(c["activation"], c["batch_size"]) for c in configs}),
        "in_process_padded": len({(c["activation"], padded_size(c["batch_size"])) for c in configs}),
    }
    print("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
