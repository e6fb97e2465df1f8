"""wrapup-batch: bulk-apply Genesys Cloud wrap-up codes, throttled and resumable."""

__version__ = "0.1.0"
