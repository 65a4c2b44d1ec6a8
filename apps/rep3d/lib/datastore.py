"""The app's local datastore: upstream ``LocalDatastore`` with checked ids, uploads and labels.

``monailabel`` 0.8.5 joins the ids and tags that clients send to its folders as given, so ``image=../x`` on
``PUT /datastore/image`` writes outside the studies folder, an upload replaces an existing image of the same id,
and files that are not images (or labels on another grid) are stored and only fail later, inside training.
Here every id and tag must be a plain name, uploads must be readable 3D single-channel volumes with finite
values, an existing image is not replaced by different content, and a label must hold non-negative integers on
its image's grid. Refusals are HTTP errors (400, 404, 409) whose message names the id and the problem.

Several processes write ``datastore_v2.json``: the server (labels, uploads, strategy time stamps) and the
background tasks MONAI Label starts as processes of their own (scoring stores its scores in the image info; a
training run or a scoring run reconciles the file at start-up). Upstream writes its in-memory copy as it is, so a
process that loaded the file before a label was saved would drop that label when it stores a score. Here info
updates re-read the file under the datastore's lock before changing it, and uploads / labels re-read it first.
"""

import logging
import os
import tempfile
from typing import Any, Dict

from fastapi import HTTPException
from filelock import FileLock
from monailabel.config import settings
from monailabel.datastore.local import LocalDatastore, LocalDatastoreModel
from monailabel.interfaces.datastore import Datastore
from monailabel.utils.others.generic import file_checksum

from rep3d_networks.transforms import VolumeError, check_label_values, check_same_grid, check_volume, load_volume

logger = logging.getLogger(__name__)


def check_name(value: Any, what: str) -> None:
    """``value`` is a plain name (no folder part), as datastore ids and label tags are.

    Raises:
        HTTPException: 400 for an empty name, ``.``/``..``, a path separator or a NUL character.
    """
    text = str(value)
    if text in ("", ".", "..") or any(c in text for c in ("/", "\\", "\x00")):
        raise HTTPException(
            status_code=400,
            detail=f"Invalid {what} {text!r}: ids and tags are plain names without folders ('/', '\\\\', '..').",
        )


def check_infer_image(request: Dict[str, Any], datastore: Datastore) -> None:
    """The ``image`` of an infer request is a datastore id, or a file the server wrote (an upload, a session).

    Upstream ``MONAILabelApp.infer`` takes any existing path on the server as the image. Allowed paths here are
    the infer endpoint's uploads (``tmp*`` files directly in the temporary folder) and files under
    ``MONAI_LABEL_SESSION_PATH``.

    Raises:
        HTTPException: 400 for a path elsewhere on the server or an id with a folder part, 404 for an unknown id.
    """
    image = request.get("image")
    if not isinstance(image, str):
        return
    if os.path.exists(image):
        path = os.path.realpath(image)
        in_temp = os.path.dirname(path) == os.path.realpath(tempfile.gettempdir())
        upload = in_temp and os.path.basename(path).startswith("tmp")  # written by the /infer endpoint
        sessions = settings.MONAI_LABEL_SESSION_PATH
        if not upload and not (sessions and path.startswith(os.path.realpath(sessions) + os.sep)):
            raise HTTPException(
                status_code=400,
                detail=f"Invalid image {image!r}: inference takes the id of an image in the datastore (or an "
                "uploaded file), not a path on the server.",
            )
        return
    check_name(image, "image id")
    if not datastore.get_image_uri(image):
        raise not_found(image)


def not_found(image_id: str) -> HTTPException:
    return HTTPException(
        status_code=404, detail=f"Image {image_id!r} is not in the datastore (GET /datastore/?output=all lists them)."
    )


def invalid_upload(what: str, error: VolumeError) -> HTTPException:
    return HTTPException(status_code=400, detail=f"Upload refused for {what}: the file {error.problem}")


def check_label_file(image_path: str, label_filename: str, what: str) -> None:
    """A label file is one readable 3D channel of non-negative integers on the grid of ``image_path``.

    Raises:
        HTTPException: 400 naming ``what`` and the problem.
    """
    try:
        label = load_volume(label_filename)
        check_volume(label, label_filename, channels=1)
        check_label_values(label, label_filename, num_classes=None)
        image = load_volume(image_path)
        check_same_grid(image.affine, image.shape[1:], image_path, label.affine, label.shape[1:], label_filename)
    except VolumeError as error:
        raise invalid_upload(what, error) from error


class Rep3DDatastore(LocalDatastore):
    """``LocalDatastore`` that validates what clients send (see the module docstring); same arguments."""

    def add_image(self, image_id: str, image_filename: str, image_info: Dict[str, Any]) -> str:
        image_id = image_id or self._to_id(os.path.basename(image_filename))[0]
        check_name(image_id, "image id")
        try:
            check_volume(load_volume(image_filename), image_filename)
        except VolumeError as error:
            raise invalid_upload(f"image {image_id!r}", error) from error
        self._init_from_datastore_file()  # what other processes wrote since this one read the file
        existing = self.get_image_uri(image_id)
        if existing and os.path.isfile(existing) and file_checksum(existing) != file_checksum(image_filename):
            raise HTTPException(
                status_code=409,
                detail=f"Image {image_id!r} already exists with different content; upload under another id (in "
                f"3D Slicer: rename the volume) or delete it first (DELETE /datastore/image?id={image_id}).",
            )
        return super().add_image(image_id, image_filename, image_info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any]) -> str:
        check_name(image_id, "image id")
        check_name(label_tag, "label tag")
        image_path = self.get_image_uri(image_id)
        if not image_path:
            raise not_found(image_id)
        check_label_file(image_path, label_filename, f"the label of image {image_id!r}")
        self._init_from_datastore_file()  # keeps the scores another process stored since this one read the file
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def remove_image(self, image_id: str) -> None:
        check_name(image_id, "image id")
        if not self.get_image_uri(image_id):
            raise not_found(image_id)
        super().remove_image(image_id)

    def remove_label(self, label_id: str, label_tag: str) -> None:
        check_name(label_id, "label id")
        check_name(label_tag, "label tag")
        super().remove_label(label_id, label_tag)

    def get_image_uri(self, image_id: str) -> str:
        check_name(image_id, "image id")
        return super().get_image_uri(image_id)

    def get_label_uri(self, label_id: str, label_tag: str) -> str:
        check_name(label_id, "label id")
        check_name(label_tag, "label tag")
        return super().get_label_uri(label_id, label_tag)

    def get_image_info(self, image_id: str) -> Dict[str, Any]:
        check_name(image_id, "image id")
        return super().get_image_info(image_id)

    def get_label_info(self, label_id: str, label_tag: str) -> Dict[str, Any]:
        check_name(label_id, "label id")
        check_name(label_tag, "label tag")
        return super().get_label_info(label_id, label_tag)

    def update_image_info(self, image_id: str, info: Dict[str, Any]) -> None:
        """Upstream's update on the latest ``datastore_v2.json`` (see the module docstring)."""
        check_name(image_id, "image id")
        with FileLock(self._lock_file):
            self._read_datastore_file()
            obj = self._datastore.objects.get(image_id)
            if obj is None:
                raise not_found(image_id)
            obj.image.info.update(info)
            self._update_datastore_file(lock=False)

    def update_label_info(self, label_id: str, label_tag: str, info: Dict[str, Any]) -> None:
        """Upstream's update on the latest ``datastore_v2.json`` (see the module docstring)."""
        check_name(label_id, "label id")
        check_name(label_tag, "label tag")
        with FileLock(self._lock_file):
            self._read_datastore_file()
            label = self._datastore.label(label_id, label_tag)
            if label is None:
                raise HTTPException(status_code=404, detail=f"No label {label_tag!r} for image {label_id!r}.")
            label.info.update(info)
            self._update_datastore_file(lock=False)

    def _read_datastore_file(self) -> None:
        """Loads ``datastore_v2.json`` as upstream's ``_init_from_datastore_file`` does, for a caller that holds the
        lock already (upstream's takes it, and a second ``FileLock`` on the same file in one process waits for
        ever)."""
        if os.path.exists(self._datastore_config_path):
            with open(self._datastore_config_path) as stream:
                self._datastore = LocalDatastoreModel.model_validate_json(stream.read())
            self._datastore.base_path = self._datastore_path
            self._config_ts = os.stat(self._datastore_config_path).st_mtime
