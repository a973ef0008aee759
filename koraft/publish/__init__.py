"""After the pipeline: reports, Hub upload, merged export. No stage imports this package."""
