"""``python -m dprl.sac``: train a SAC expert on a gymnasium MuJoCo task (``dprl.experts.sac``)."""
from dprl.experts.sac import main

if __name__ == "__main__":
    main()
