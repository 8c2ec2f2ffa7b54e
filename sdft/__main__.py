"""``python -m sdft``: the same CLI as the ``sdft`` console script (for torchrun / accelerate launch -m)."""

from sdft.cli import main

if __name__ == "__main__":
    main()
