"""Object-detection data: embedded scenes, COCO / VOC readers, the detection datamodule."""
