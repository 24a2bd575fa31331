"""Draft win models: P(Radiant wins) from a full or partial draft, fitted on matches.

Pure domain code (numpy, scipy): no gRPC, no storage. The modules, in the order they build on
each other:

    data         Drafts: the matches as arrays, split by time
    metrics      Quality and the metrics that fill it
    fitting      the MAP logistic regression and the precision grid search
    calibration  monotone logit -> probability maps
    served       DraftModel: the decomposed, calibrated model the service serves
    designs      sparse hero / pair design matrices
    models       the decomposable models and the calibrated blend of them that is served

Baselines that are never served (majority, xgboost) live in bench/baselines.py.
"""
