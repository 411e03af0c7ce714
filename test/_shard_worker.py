"""Worker of test_render_shards.py, run by torchrun: renders a learnt object's training set
through nol_ros.learn.render_training_set (which hands it to the ranks under torchrun).

    python -m torch.distributed.run --standalone --nproc_per_node 2 test/_shard_worker.py \
        WORKSPACE NAME OBJ_ID METHOD PRESET BATCH
"""

import json
import sys

import torch

from nol_ros.learn import RenderStageConfig, render_training_set

if __name__ == "__main__":
    ws, name, oid, method, preset, batch = sys.argv[1:7]
    torch.set_num_threads(1)
    rep = render_training_set(ws, name, int(oid), RenderStageConfig(
        method=method, preset=preset, batch=int(batch)), "cpu")
    # one write per line: both ranks share the pipe, and with PYTHONUNBUFFERED print() writes
    # the text and its newline apart, so two ranks ending together gave '{...}{...}\n\n'
    sys.stdout.write(json.dumps({"workers": rep.get("workers"), "images": rep["images"]}) + "\n")
    sys.stdout.flush()
