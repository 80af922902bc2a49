"""The error every `jaxgen` command raises for a bad argument."""


class UsageError(ValueError):
  """A command-line argument is invalid; the message names it, what was expected and found."""
