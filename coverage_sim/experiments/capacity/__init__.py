"""Cross-paper experiments on the policy class: ``capacity-findings`` (:mod:`.findings`)."""
