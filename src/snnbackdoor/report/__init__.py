"""The report layer: renders run directories (markdown, CSV, figures) for every experiment
kind. Nothing here trains or measures; experiments only orchestrate stages."""
