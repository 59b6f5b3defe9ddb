"""balanced-dpo's pipeline: the stages and the contracts between them.

Shared contracts (this folder): `config` (the run configuration), `schema` (the tables), `paths` (the run
directory), `io` (atomic writes and manifests), `images` (PNG in, RGB out).

Subpackages, one per part: `models`, `data`, `stage1`, `voting`, `evaluation`, `workflows`, `reporting` (the
run's HTML report and the model cards); `testing` holds the generators of test inputs. Command lines (thin: they
parse arguments and call in): `score.py` (stage 1, what `ray job submit` runs), `vote.py`, `evaluate.py`, `job.py`,
`demo.py`, `ablation.py`, `experiment.py`, `report.py`. The trainer is the
`trainer` package beside this one.
"""
