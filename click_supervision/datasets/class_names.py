"""Class name lists shipped with the library (needed offline, e.g. TFDS `coco/2017` has no names)."""

# PASCAL VOC, in the devkit's (alphabetical) order; TFDS `voc/2007` uses the same order.
VOC_CLASSES = (
    'aeroplane', 'bicycle', 'bird', 'boat', 'bottle', 'bus', 'car', 'cat', 'chair', 'cow',
    'diningtable', 'dog', 'horse', 'motorbike', 'person', 'pottedplant', 'sheep', 'sofa', 'train',
    'tvmonitor')
