"""`pilot autolabel`: detector labels for a game without ground truth (issue 19).

Modules, in the order the data flows: `proposals` (motion and salient blobs), `tracks` (ByteTrack),
`features` and `clusters` (appearance clusters, montages), `naming` (names file, VLM), `review` (the
page where a person names clusters and answers the audit), `templates` (the sprite bank), `labels`
(boxes-auto.parquet, the YOLO dataset); `pipeline` runs them as resumable stages over the work folder
(`store`), `cli` is the command, `config` its settings. YOLO self-training lives in
training/autolabel.py (the layers keep vlm_labeling from importing training).
"""
