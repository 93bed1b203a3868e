"""Budgets: a MAC, parameter or latency target instead of a γ. ``targets`` reads them and builds
the :class:`~sss.budget.targets.Target` aimed at; ``ranking`` orders the structures; ``steering``
sets γ after each factor step; ``landing`` lands the selection inside the target's band;
``controller`` puts them together; ``magnitude`` starts the factors from trained weights."""
