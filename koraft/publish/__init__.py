"""After the pipeline: reports, the pull-request comment and Hub upload. No stage imports this package."""
