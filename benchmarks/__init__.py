"""The project's benchmarks: one module per topic behind one command, ``python -m benchmarks``.

folds.py            the held-out routine every topic uses (cross-validation, leave-one-type-out)
accuracy.py         separation: 5-fold and leave-one-type-out AUROC
operating_point.py  announced against measured recall and false alarms (the accuracy topic's fits)
precision.py        what the int8 backbone and the bfloat16 search change in the scores
speed.py            fit, predict stage by stage, the whole process
scale.py            many images, one process and Ray
peer.py             anomalib's PatchCore (peer_anomalib.py runs in its environment)
shift.py            a changed line: the drift check and adapt
precision_shift.py  int8 against fp32 under each shift of shift.py
camera.py           frames judged from a GenTL camera simulator, and the archive over a long run
few_shot.py         a new product from 1 to 16 good images
levers.py           what was tried and not shipped
report.py           BENCHMARKS.md from the results in results/
"""
