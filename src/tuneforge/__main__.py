"""`python -m tuneforge …` (also what torchrun launches: `torchrun --nproc_per_node 2 -m tuneforge train …`)."""

from tuneforge.cli import main

main()
