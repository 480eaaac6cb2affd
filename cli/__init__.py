"""Typer front end of asr-bn (installed as the package `asr_bn_cli`); one module per command, gathered in main."""
