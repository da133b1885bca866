"""One torchrun rank of the distributed training tests: the digits VAE of test_distributed.py.

python ddp_worker.py OUT STEPS [--resume] [--crash-rank R --crash-at N]: rank R dies hard (os._exit) when it
asks for its N-th training batch, as a rank killed by the machine would.
"""
import argparse
import os

from latentforge.training.data import open_data
from latentforge.training.train import TrainConfig, train

SETTINGS = dict(kind="vae", data="digits", batch_size=8, checkpoint_every=2, sample_every=100, log_every=1,
                eval_batches=0, progress=False, model_options={"base_channels": 8})


class DyingData:
    """The digits, except that one rank's process exits while it fetches its `at`-th training batch."""

    def __init__(self, data, rank: int, at: int):
        self.data, self.rank, self.at, self.calls = data, rank, at, 0

    def __getattr__(self, name):
        return getattr(self.data, name)

    def get(self, split, indices):
        if split == "train":
            self.calls += 1
            if self.calls == self.at and int(os.environ["RANK"]) == self.rank:
                os._exit(3)
        return self.data.get(split, indices)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("steps", type=int)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--crash-rank", type=int)
    p.add_argument("--crash-at", type=int)
    args = p.parse_args()
    data = open_data("digits")
    if args.crash_rank is not None:
        data = DyingData(data, args.crash_rank, args.crash_at)
    train(TrainConfig(out=args.out, steps=args.steps, resume=args.resume, **SETTINGS), data=data)


if __name__ == "__main__":
    main()
