"""How a compiled call reports a non-finite step to the loop that runs it."""

NON_FINITE = "spec_impl: non-finite loss"  # the message of the in-graph finiteness check
# The loss a step reports when its update made a weight non-finite although its loss and
# gradients were finite (a loss can be +inf, as log(0); -inf is what no usual loss reaches).
WEIGHTS_OVERFLOWED = float("-inf")
