"""Consolidation: distil a domain's memory into a sparse LoRA adapter (DESIGN.md section 7).

`dataset` builds the training set, `masks` chooses the entries a domain may change, `train` runs
the student, `evaluate` judges the candidate, `run` ties them together per domain.
"""
