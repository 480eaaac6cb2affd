"""`python -m asr_bn_cli …` (used by torchrun) runs the same CLI as the `asr-bn` script."""

from asr_bn_cli.main import main

main()
