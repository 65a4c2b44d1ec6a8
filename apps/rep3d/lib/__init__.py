"""Task classes of the Rep3D MONAI Label app (see ``docs/monailabel.md``)."""
