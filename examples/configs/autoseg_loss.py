# mmengine / mmsegmentation config fragment: the searched loss as the decode head's loss.
# `custom_imports` registers type="AutoSegLoss" in mmengine's MODELS registry (and so in
# mmseg's child registry). In an mmseg config, put the dict under
# model.decode_head.loss_decode (and, with a weight of 0.4, under model.auxiliary_head too).
custom_imports = dict(imports=["autoloss_ray.integrations.mmseg"], allow_failed_imports=False)

loss_decode = dict(
    type="AutoSegLoss",
    metric="miou",
    preset="miou",  # the paper's curves; or loss_file="runs/my-loss.json" (autoloss export)
    num_classes=8,  # the synthetic scenes' classes; your dataset's class count
    loss_weight=1.0,
    loss_name="loss_autoseg",
)
