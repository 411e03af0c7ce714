"""Recognisers trained on rendered images (NOL paper, Sec. 4.2 and 4.7): pure core, no ROS.

    renderers.py   ObjectRenderer protocol; TexturedMeshRenderer (ground-truth textures)
    poses.py       hemisphere pose grid with image-space in-plane rotations, crop intrinsics
    trainset.py    render sets (one BOP scene per object) and object crops from any BOP scene
    augment.py     colour / background / occlusion augmentation (numpy + OpenCV)
    detset.py      multi-object detector training images (pasted renders), COCO JSON
    detector.py    detector presets (paper: RetinaNet ResNet-50-FPN; cpu, demo, tiny: the
                   centre-heat-map head of centernet.py), training, inference
    centernet.py   the light centre-heat-map detector head used by the CPU presets
    posenet.py     Pix2Pose-style coordinate + error-map network (GAN removed), training
    pnp.py         PnP-RANSAC on predicted correspondences, ICP refinement with depth
    evaluate.py    mAP@IoU0.5, ADD(-S) recall, BOP-CSV export
    recognizer.py  Recognizer: image (+ depth) -> detections with 6D poses (the inference API)
    pipeline.py    presets and the chain renderer -> sets -> detector + pose net -> models folder
"""
