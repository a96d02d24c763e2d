"""Run training-method cases in 1 or several processes and save losses, gradients and banks.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py CASES.json OUT.pt
    python tests/ddp_worker.py CASES.json OUT.pt                      (one process, no process group)

CASES.json: {"model_dir": ..., "cases": [{"name", "method", "recipe", "examples", "negatives",
"noise", "tied", "updates", "cycle"}]}. Each case builds the model afresh, seeds torch with 0, runs
`updates` calls of accumulate + after_optimizer_step (no optimizer step, so the parameters stay
put and the banks carry over), sums the gradients over the processes once per update (as the
training loop does) and records per update the loss and the flattened gradient, plus the banks
at the end. Process 0 saves {case name: result}; every process checks its banks equal the
others'. Used by tests/training/test_distributed.py.
"""

from __future__ import annotations

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def examples(n, negatives, ids=False):
    """With `ids`, examples i and i + 2 of each group of four share a query (so with two
    processes a query's other positive sits in the other process's rows), and a hard negative
    is the positive of the example three places on (sometimes a known positive of the row)."""
    from pipeline.training.methods import Example

    out = [Example(f"question {i} about subject {i * 7} and more", f"passage {i} on subject {i * 7} " * (1 + i % 3),
                   [f"unrelated text {i} number {j}" for j in range(negatives)]) for i in range(n)]
    if ids:
        for i, ex in enumerate(out):
            ex.query_id, ex.positive_id = f"q{(i // 4) * 2 + i % 2}", f"d{i}"
            ex.negative_ids = [f"d{(i + 3 + j) % n}" for j in range(negatives)]
    return out


def run_case(model_dir: str, case: dict) -> dict:
    import torch

    from pipeline.training import distributed
    from pipeline.models.encoder import BiEncoder, EncoderSpec
    from pipeline.training.fanoise import FANoise
    from pipeline.training.methods import get_method

    torch.manual_seed(0)
    model = BiEncoder.from_spec(EncoderSpec(model=model_dir, tied=case.get("tied", False), query_max_length=16,
                                            passage_max_length=24)).train()
    params = list({id(p): p for p in model.parameters()}.values())
    noise = FANoise(**case["noise"]) if case.get("noise") else None
    method = get_method(case["method"])(model, case["recipe"], noise)
    data = examples(case["examples"], case.get("negatives", 0), ids=case.get("ids", False))
    if case.get("cycle"):  # revisit the first `cycle` examples (SogCLR's state is then used)
        data = [data[i % case["cycle"]] for i in range(len(data))]
    for ex in data:
        method.positives.setdefault(ex.query_id, set()).add(ex.positive_id)
    per_update = method.examples_per_update
    torch.manual_seed(0)
    result = {"loss": [], "grads": [], "stats": []}
    for u in range(case.get("updates", 1)):
        model.zero_grad(set_to_none=True)
        stats = method.accumulate(data[u * per_update:(u + 1) * per_update])
        distributed.all_reduce_grads(params)
        result["loss"].append(stats["loss"])
        result["stats"].append(stats)
        result["grads"].append(torch.cat([p.grad.reshape(-1) for p in params if p.grad is not None]).clone())
        method.after_optimizer_step()
    state = method.state_dict()
    # Memory banks, and SogCLR's per-example state ("state": the same rows/ids layout).
    banks = {k: v["rows"] for k, v in state.items() if k.startswith("bank") or k == "state"}
    distributed.assert_identical([banks[k] for k in sorted(banks)], f"{case['name']}: banks")
    result["banks"] = banks
    result["bank_ids"] = {k: v["ids"] for k, v in state.items() if k in banks}
    result["examples_per_update"] = per_update
    return result


def main(cases_path: str, out_path: str) -> None:
    import torch

    from pipeline.training import distributed

    spec = json.loads(open(cases_path).read())
    distributed.init_from_env("cpu")
    torch.set_num_threads(1)
    results = {case["name"]: run_case(spec["model_dir"], case) for case in spec["cases"]}
    if distributed.is_main():
        torch.save(results, out_path)
    distributed.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    main(*sys.argv[1:3])
