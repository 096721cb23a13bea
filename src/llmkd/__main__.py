"""``python -m llmkd``: the CLI, e.g. ``accelerate launch --num_processes 2 -m llmkd run CONFIG``."""

from .cli import main

if __name__ == "__main__":
    main()
