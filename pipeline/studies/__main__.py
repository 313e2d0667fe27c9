"""python -m pipeline.studies (make studies): every study with its claim, and how to run one."""

from pipeline.harness.help import study_list
from pipeline.studies import STUDIES

if __name__ == "__main__":
    print(study_list(STUDIES))
