"""Tests of the application: autoloss_app, the CLI, the docs, the package's house rules."""
