"""Copy a finished run's JSON and plots into ``experiments/results/`` and rewrite its block in the docs.

    python -m experiments.publish seq2seq runs/seq2seq/num2words-de --block seq2seq_num2words_de --table num2words_de
    python -m experiments.publish ntm runs/ntm/quick-copy --block ntm_copy

Every number in those blocks (``docs/experiments/<experiment>.md``) comes from the run's JSON by this script;
it then refreshes the one-line-per-table summaries (``python -m experiments.summary``) of the README and the
experiments' index page.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(prog="python -m experiments.publish")
    ap.add_argument("experiment", choices=["seq2seq", "ntm", "pointer", "transformer", "lstmn", "snail",
                                           "show_attend_tell", "sagan"])
    ap.add_argument("run_dir", type=Path, nargs="+",
                    help="a comparison run's --out folder (holds comparison.json); pointer, transformer: "
                         "one or more run folders; snail: one or more run folders, plus the published settings "
                         "table whose rows to keep; ntm: more folders add rows trained on other lengths; "
                         "show_attend_tell: folders whose rows differ only in the hard model's settings; lstmn: "
                         "the test-split folder and the lr sweep's val-split folders")
    ap.add_argument("--block", required=True,
                    help="the block to rewrite (<!-- NAME:begin -->, in the docs page that holds it)")
    ap.add_argument("--readme", type=Path, default=None, help="write the block into this page instead")
    ap.add_argument("--table", default=None,
                    help="the published table's folder under experiments/results/<experiment>/ (default: the block)")
    ap.add_argument("--results", type=Path, default=None,
                    help="the table's folder itself (default experiments/results/<experiment>/<table>; transformer: "
                         "the folder of its tables, default experiments/results/transformer)")
    args = ap.parse_args(argv)
    from experiments import lstmn, ntm, pointer, sagan, seq2seq, show_attend_tell, snail, transformer

    if args.experiment == "transformer":  # its three tables: translate/, ablation/, lm/ under one folder
        if args.table:
            ap.error("transformer writes its tables translate/, ablation/ and lm/; give --results for their folder")
        results = args.results or RESULTS / "transformer"
    else:
        results = args.results or RESULTS / args.experiment / (args.table or args.block)
    if args.experiment in ("pointer", "transformer", "snail", "ntm", "show_attend_tell", "lstmn"):
        publish = {"pointer": pointer.publish, "transformer": transformer.publish, "snail": snail.publish,
                   "ntm": ntm.publish, "show_attend_tell": show_attend_tell.publish,
                   "lstmn": lstmn.publish}[args.experiment]
        text = publish(args.run_dir, results, args.block, args.readme)
    else:
        if len(args.run_dir) != 1:
            ap.error(f"{args.experiment} publishes one comparison run folder")
        publish = {"seq2seq": seq2seq.publish, "sagan": sagan.publish}[args.experiment]
        text = publish(args.run_dir[0], results, args.block, args.readme)
    print(text)
    if args.readme is None and args.results is None:  # a table of the repository: refresh the summaries
        from experiments import summary

        summary.update()
    return text


if __name__ == "__main__":
    main(sys.argv[1:])
