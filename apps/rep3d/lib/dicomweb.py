"""The app against a PACS: upstream ``DICOMWebDatastore`` with the app's checks, exact label values and fresh lists.

``monailabel`` 0.8.5's DICOMweb datastore, tried against Orthanc (docs/pacs.md), loses what the app guarantees on a
local folder; here:

* **Class numbers survive the round trip.** A saved label becomes a DICOM SEG with one segment per label value,
  named after the served model's class (or the client's ``label_info`` name for that value), its value written in the
  segment description (``label value 6``), and the series description naming the model. Upstream numbers segments
  1..N and reads them back as 1..N (a liver of value 6 came back as 3). Reading a SEG maps each segment back to its
  value (description, else its class name) and resamples it onto the image's grid.
* **The checks run**: ids are plain names, an unknown series is a 404, a series that is not an image (SEG, SR,
  RTSTRUCT, ...) is refused before anything is downloaded, a label must be on its image's grid with integer values,
  and the written SEG must share the image's frame of reference and slice positions.
* **Compressed series**: instances are fetched in the transfer syntax the PACS stores (``transfer-syntax=*``: Orthanc
  cannot transcode JPEG 2000) and decoded by the app (GDCM in SimpleITK); syntaxes GDCM cannot decode are refused
  with the list of those it can.
* **dcmqi from PyPI**: ``itkimage2segimage`` comes from the ``dcmqi`` package (requirements.txt) and is put on the
  server's PATH, so start-up does not download it from GitHub (offline it failed).
* **Fresh next sample**: saving a label clears upstream's two-hour cache of labelled series.
"""

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import matplotlib
import numpy as np
import pydicom
import pydicom_seg
import SimpleITK as sitk
from fastapi import HTTPException
from monailabel.datastore.dicom import DICOMWebDatastore
from monailabel.datastore.local import LocalDatastore
from monailabel.datastore.utils.colors import GENERIC_ANATOMY_COLORS
from monailabel.datastore.utils.convert import binary_to_image, dicom_to_nifti, itk_image_to_dicom_seg
from monailabel.datastore.utils.dicom import dicom_web_upload_dcm
from monailabel.interfaces.datastore import DefaultLabelTag
from pydicom.dataset import Dataset
from pydicom.uid import UID

from lib.datastore import check_label_file, check_name

logger = logging.getLogger(__name__)

IMAGE_MODALITIES = ("CT", "MR", "PT", "NM", "US", "XA", "RF", "DX", "CR", "MG", "OT")
"""Modalities the app segments; a series of another modality (SEG, SR, RTSTRUCT, PR, KO, ...) is refused."""
DECODABLE = {
    "1.2.840.10008.1.2": "Implicit VR Little Endian",
    "1.2.840.10008.1.2.1": "Explicit VR Little Endian",
    "1.2.840.10008.1.2.1.99": "Deflated Explicit VR Little Endian",
    "1.2.840.10008.1.2.2": "Explicit VR Big Endian",
    "1.2.840.10008.1.2.4.50": "JPEG Baseline",
    "1.2.840.10008.1.2.4.51": "JPEG Extended",
    "1.2.840.10008.1.2.4.57": "JPEG Lossless",
    "1.2.840.10008.1.2.4.70": "JPEG Lossless SV1",
    "1.2.840.10008.1.2.4.80": "JPEG-LS Lossless",
    "1.2.840.10008.1.2.4.81": "JPEG-LS Near-lossless",
    "1.2.840.10008.1.2.4.90": "JPEG 2000 Lossless",
    "1.2.840.10008.1.2.4.91": "JPEG 2000",
    "1.2.840.10008.1.2.5": "RLE Lossless",
}
"""Transfer syntaxes GDCM (in SimpleITK, which converts the series) decodes."""
VALUE_IN_DESCRIPTION = re.compile(r"label value (\d+)")
POSITION_TOLERANCE_MM = 1e-3


def dcmqi_bin() -> str:
    """The folder of dcmqi's ``itkimage2segimage`` from the ``dcmqi`` package (requirements.txt).

    Raises:
        RuntimeError: the package is not installed (upstream would download dcmqi from GitHub at start-up).
    """
    try:
        import dcmqi
    except ImportError as error:
        raise RuntimeError(
            "A DICOMweb studies URL needs dcmqi's itkimage2segimage: pip install dcmqi (requirements.txt has it)"
        ) from error
    return str(Path(dcmqi.__file__).parent / "bin")


def series_label(model_classes: Dict[str, Dict[int, str]]) -> Dict[int, Tuple[str, List[str]]]:
    """``{value: (class name, [models])}`` for values every served model that has them names alike; values that
    models name differently (e.g. ``kits`` 1 kidney, ``amos_ct`` 1 spleen) are left out (the client must name them)."""
    names: Dict[int, Dict[str, List[str]]] = {}
    for model, classes in model_classes.items():
        for value, name in classes.items():
            names.setdefault(value, {}).setdefault(name, []).append(model)
    return {value: next(iter(by_name.items())) for value, by_name in names.items() if len(by_name) == 1}


class Rep3DDICOMwebDatastore(DICOMWebDatastore):
    """Upstream ``DICOMWebDatastore`` with the checks and mappings of the module docstring.

    Args:
        model_classes: ``{model: {label value: class name}}`` of the served models (background left out).
        Others: as upstream's.
    """

    def __init__(
        self,
        client,
        search_filter,
        cache_path,
        fetch_by_frame,
        convert_to_nifti,
        model_classes: Dict[str, Dict[int, str]],
    ) -> None:
        self.model_classes = model_classes
        super().__init__(client, search_filter, cache_path, fetch_by_frame, convert_to_nifti)

    @classmethod
    def from_upstream(
        cls, upstream: DICOMWebDatastore, model_classes: Dict[str, Dict[int, str]]
    ) -> "Rep3DDICOMwebDatastore":
        """The same PACS client, search filter and cache as the datastore upstream's app built from its settings."""
        return cls(
            upstream._client,
            upstream._search_filter,
            os.path.dirname(upstream._datastore_path),
            upstream._fetch_by_frame,
            upstream._convert_to_nifti,
            model_classes,
        )

    # -- series checks ---------------------------------------------------------------------------------------------

    def series_meta(self, series_id: str) -> Dataset:
        """The PACS's QIDO record of ``series_id``.

        Raises:
            HTTPException: 404 when the PACS has no such series.
        """
        check_name(series_id, "image id")
        found = [
            s
            for s in self._client.search_for_series(search_filters={"SeriesInstanceUID": series_id})
            if s.get("0020000E", {}).get("Value") == [series_id]
        ]
        if not found:
            raise HTTPException(
                status_code=404,
                detail=f"Series {series_id!r} is not in the PACS {self._client.base_url} "
                "(GET /datastore/?output=all lists the image series).",
            )
        return Dataset.from_json(found[0])

    def check_image_series(self, series_id: str) -> Dataset:
        """``series_id`` exists and is an image series (:data:`IMAGE_MODALITIES`); returns its QIDO record.

        Raises:
            HTTPException: 404 unknown series, 400 a series of another modality.
        """
        meta = self.series_meta(series_id)
        modality = str(meta.get("Modality", ""))
        if modality not in IMAGE_MODALITIES:
            raise HTTPException(
                status_code=400,
                detail=f"Series {series_id!r} is a {modality or 'series without modality'}"
                f", not an image: the app segments {', '.join(IMAGE_MODALITIES)} series.",
            )
        return meta

    # -- images ----------------------------------------------------------------------------------------------------

    def get_image_uri(self, image_id: str) -> str:
        """Upstream's cached download and NIfTI conversion, after :meth:`check_image_series`; instances are fetched
        as stored and checked with :func:`check_transfer_syntaxes` (a refused series leaves nothing in the cache)."""
        image_nii_gz = os.path.realpath(os.path.join(self._datastore.image_path(), f"{image_id}.nii.gz"))
        image_dir = os.path.realpath(os.path.join(self._datastore.image_path(), image_id))
        if self._convert_to_nifti and os.path.exists(image_nii_gz):
            return image_nii_gz
        meta = self.check_image_series(image_id)
        if not os.path.isdir(image_dir) or not os.listdir(image_dir):
            self.download_series(str(meta["StudyInstanceUID"].value), image_id, image_dir)
        if not self._convert_to_nifti:
            return image_dir
        converted = dicom_to_nifti(image_dir)
        try:
            LocalDatastore.add_image(self, image_id, converted, self._dicom_info(image_id))
        finally:
            os.unlink(converted)
        return image_nii_gz

    def download_series(self, study_id: str, series_id: str, target: str) -> None:
        """All instances of a series in the PACS's own transfer syntax, into ``target`` (complete or absent).

        Raises:
            HTTPException: 400 for a transfer syntax outside :data:`DECODABLE`.
        """
        parent = os.path.dirname(target)
        os.makedirs(parent, exist_ok=True)
        partial = tempfile.mkdtemp(prefix=".download-", dir=parent)
        try:
            instances = self._client.retrieve_series(study_id, series_id, media_types=(("application/dicom", "*"),))
            check_transfer_syntaxes(series_id, instances)
            for instance in instances:
                instance.save_as(os.path.join(partial, f"{instance.SOPInstanceUID}.dcm"), write_like_original=False)
            shutil.rmtree(target, ignore_errors=True)
            os.replace(partial, target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    # -- labels ----------------------------------------------------------------------------------------------------

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: Dict[str, Any], label_id: str = ""
    ) -> str:
        """Checks the label on its image's grid; a ``final`` label goes to the PACS as a DICOM SEG
        (:meth:`write_seg`) and its series joins the labelled ones at once; every label is kept in the cache."""
        check_name(label_tag, "label tag")
        image_uri = self.get_image_uri(image_id)
        converted = binary_to_image(image_uri, label_filename) if label_filename.endswith(".bin") else ""
        label_filename = converted or label_filename
        try:
            check_label_file(image_uri, label_filename, f"the label of image {image_id!r}")
            if label_tag == DefaultLabelTag.FINAL:
                seg_file = self.write_seg(
                    image_id, label_filename, label_info.get("label_info"), label_info.get("model")
                )
                try:
                    seg_series = dicom_web_upload_dcm(seg_file, self._client)
                finally:
                    os.unlink(seg_file)
                image_info = self.get_image_info(image_id)
                label_info = {
                    **label_info,
                    "SeriesInstanceUID": seg_series,
                    "Modality": image_info.get("Modality"),
                    "PatientID": image_info.get("PatientID"),
                    "StudyInstanceUID": image_info.get("StudyInstanceUID"),
                }
                self.clear_series_caches()
            return LocalDatastore.save_label(self, image_id, label_filename, label_tag, label_info)
        finally:
            if converted:
                os.unlink(converted)

    def segments(
        self, values: List[int], client_names: Optional[List[Dict[str, Any]]], model: Optional[str]
    ) -> Tuple[List[Tuple[int, str]], str]:
        """``([(value, name)], series description)`` for the label values of a SEG.

        Names come from the client's ``label_info`` entry with that ``idx`` if any, else from the served models'
        classes (``model``'s when the request names a served model).

        Raises:
            HTTPException: 400 for a value without a name (not a class of the served models, or named differently by
                two of them, and not named by the client).
        """
        given = {int(item["idx"]): str(item["name"]) for item in client_names or [] if "idx" in item and "name" in item}
        if model and model in self.model_classes:
            table = {v: (n, [model]) for v, n in self.model_classes[model].items()}
        else:
            table = series_label(self.model_classes)
        named, models = [], set()
        for value in values:
            if value in given:
                named.append((value, given[value]))
            elif value in table:
                named.append((value, table[value][0]))
                models.update(table[value][1])
            else:
                raise HTTPException(
                    status_code=400,
                    detail=f"Label value {value} has no class name: it is not a class of "
                    f"the served models {sorted(self.model_classes)} (or they name it differently); send "
                    "label_info [{'idx': value, 'name': ...}] or the 'model' whose classes these are.",
                )
        source = sorted({model} if model in self.model_classes else models) or sorted(self.model_classes)
        return named, f"MONAI Label Rep3D {', '.join(source)}"

    def write_seg(self, image_id: str, label_filename: str, client_names, model: Optional[str]) -> str:
        """A DICOM SEG of the label on the image series (dcmqi's ``itkimage2segimage``), checked with
        :func:`check_seg_geometry`; returns its path (a temporary file)."""
        values = [int(v) for v in np.unique(sitk.GetArrayFromImage(sitk.ReadImage(label_filename))) if v > 0]
        if not values:
            raise HTTPException(
                status_code=400, detail=f"The label of image {image_id!r} is empty: nothing to store as a SEG."
            )
        named, description = self.segments(values, client_names, model)
        attributes = [
            {
                "labelID": value,
                "SegmentLabel": name,
                "SegmentDescription": f"{name}, label value {value}",
                "SegmentAlgorithmType": "SEMIAUTOMATIC",
                "SegmentAlgorithmName": description,
                "recommendedDisplayRGBValue": display_colour(name, value),
                "SegmentedPropertyCategoryCodeSequence": {
                    "CodeValue": "123037004",
                    "CodingSchemeDesignator": "SCT",
                    "CodeMeaning": "Anatomical Structure",
                },
                "SegmentedPropertyTypeCodeSequence": {
                    "CodeValue": "85756007",
                    "CodingSchemeDesignator": "SCT",
                    "CodeMeaning": "Tissue",
                },
            }
            for value, name in named
        ]
        template = {
            "ContentCreatorName": "MONAI Label",
            "SeriesDescription": description,
            "SeriesNumber": "300",
            "InstanceNumber": "1",
            "segmentAttributes": [attributes],
            "ContentLabel": "SEGMENTATION",
            "ContentDescription": description,
            "ClinicalTrialSeriesID": "Session1",
            "ClinicalTrialTimePointID": "1",
            "ClinicalTrialCoordinatingCenterName": "MONAI",
            "BodyPartExamined": "",
        }
        image_dir = os.path.realpath(os.path.join(self._datastore.image_path(), image_id))
        seg_file = itk_image_to_dicom_seg(label_filename, image_dir, template)
        try:
            check_seg_geometry(seg_file, image_dir, image_id)
        except Exception:
            os.unlink(seg_file)
            raise
        return seg_file

    def get_label_uri(self, label_id: str, label_tag: str, image_id: str = "") -> str:
        """A ``final`` label read from its SEG series (``label_id``) onto the image's grid with the values of
        :func:`seg_to_label`; other tags from the cache, as upstream."""
        if label_tag != DefaultLabelTag.FINAL or not image_id:
            return LocalDatastore.get_label_uri(self, label_id, label_tag)
        label_nii_gz = os.path.realpath(os.path.join(self._datastore.label_path(label_tag), f"{image_id}.nii.gz"))
        if os.path.exists(label_nii_gz):
            return label_nii_gz
        label_dir = os.path.realpath(os.path.join(self._datastore.label_path(label_tag), label_id))
        if not os.path.isdir(label_dir) or not os.listdir(label_dir):
            self.download_series(str(self.series_meta(label_id)["StudyInstanceUID"].value), label_id, label_dir)
        image = self.get_image_uri(image_id)
        with tempfile.TemporaryDirectory() as scratch:
            label = os.path.join(scratch, f"{image_id}.nii.gz")
            seg_file = os.path.join(label_dir, sorted(os.listdir(label_dir))[0])
            seg_to_label(seg_file, image, label, series_label(self.model_classes))
            LocalDatastore.save_label(self, image_id, label, label_tag, self._dicom_info(label_id))
        return label_nii_gz

    def get_labeled_images(self, label_tag: Optional[str] = None, labels: Optional[List[str]] = None) -> List[str]:
        """Upstream's labelled series (from the PACS's SEGs) and the ones saved through this server."""
        local = LocalDatastore.get_labeled_images(self, DefaultLabelTag.FINAL)
        return sorted(set(super().get_labeled_images(label_tag, labels)) | set(local))

    @staticmethod
    def clear_series_caches() -> None:
        """Forgets upstream's cached series lists (two hours by default) so a new SEG counts at once."""
        DICOMWebDatastore.list_images.cache_clear()
        DICOMWebDatastore.get_labeled_images.cache_clear()


def display_colour(name: str, value: int) -> List[int]:
    """The colour viewers draw a segment in: upstream's anatomy colour table (Slicer's), else a tab20 colour by
    value."""
    if name in GENERIC_ANATOMY_COLORS:
        return list(GENERIC_ANATOMY_COLORS[name])[:3]
    return [round(255 * c) for c in matplotlib.colormaps["tab20"](value % 20)[:3]]


def check_transfer_syntaxes(series_id: str, instances: List[Dataset]) -> None:
    """Every instance is in a transfer syntax of :data:`DECODABLE`.

    Raises:
        HTTPException: 400 naming the series, the syntax and the accepted ones.
    """
    for instance in instances:
        syntax = str(instance.file_meta.get("TransferSyntaxUID", ""))
        if syntax not in DECODABLE:
            raise HTTPException(
                status_code=400,
                detail=(
                    f"Series {series_id!r}: instance {instance.get('SOPInstanceUID', '?')} is stored as "
                    f"{UID(syntax).name if syntax else 'an unknown transfer syntax'} ({syntax}), "
                    "which the app cannot decode; "
                    f"it reads {', '.join(sorted(set(DECODABLE.values())))}. "
                    "Have the PACS store or send it in one of those."
                ),
            )


def check_seg_geometry(seg_file: str, image_dir: str, image_id: str) -> None:
    """The SEG refers to the image series, shares its frame of reference, and each frame lies on a slice of it.

    Raises:
        RuntimeError: naming the first mismatch (a SEG that would misplace the label is not sent to the PACS).
    """
    seg = pydicom.dcmread(seg_file, stop_before_pixels=True)
    slices = [pydicom.dcmread(os.path.join(image_dir, f), stop_before_pixels=True) for f in os.listdir(image_dir)]
    frame_of_reference = {str(s.FrameOfReferenceUID) for s in slices}
    problems = []
    if {str(seg.FrameOfReferenceUID)} != frame_of_reference:
        problems.append(f"frame of reference {seg.FrameOfReferenceUID} vs the image's {sorted(frame_of_reference)}")
    referenced = [str(item.SeriesInstanceUID) for item in seg.get("ReferencedSeriesSequence", [])]
    if referenced != [image_id]:
        problems.append(f"it refers to series {referenced}, not {image_id}")
    positions = np.array([[float(v) for v in s.ImagePositionPatient] for s in slices])
    for number, frame in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        position = np.array([float(v) for v in frame.PlanePositionSequence[0].ImagePositionPatient])
        if np.min(np.abs(positions - position).max(axis=1)) > POSITION_TOLERANCE_MM:
            problems.append(f"frame {number} at {position.tolist()} is on no slice of the image")
            break
    if problems:
        raise RuntimeError(f"The DICOM SEG written for series {image_id!r} does not match it: {'; '.join(problems)}")


def segment_value(segment: Dataset, classes: Dict[int, Tuple[str, List[str]]]) -> int:
    """The label value of a SEG segment: ``label value N`` in its description (written by this app), else the value
    of its class name among the served models'.

    Raises:
        ValueError: neither gives a value.
    """
    match = VALUE_IN_DESCRIPTION.search(str(segment.get("SegmentDescription", "")))
    if match:
        return int(match.group(1))
    by_name = {name.lower(): value for value, (name, _) in classes.items()}
    name = str(segment.get("SegmentLabel", "")).lower()
    if name in by_name:
        return by_name[name]
    raise ValueError(
        f"segment {segment.SegmentNumber} ({name!r}) has no label value in its description and is not "
        "a class of the served models"
    )


def seg_to_label(seg_file: str, image_file: str, output: str, classes: Dict[int, Tuple[str, List[str]]]) -> None:
    """Writes the label volume of a DICOM SEG on the grid of ``image_file`` (nearest neighbour, identity transform),
    each segment with its :func:`segment_value` (later segments over earlier ones where they overlap)."""
    seg = pydicom.dcmread(seg_file)
    reference = sitk.ReadImage(image_file)
    result = pydicom_seg.SegmentReader().read(seg)
    label = np.zeros(sitk.GetArrayViewFromImage(reference).shape, np.uint8)
    for number in sorted(result.available_segments):
        try:
            value = segment_value(result.segment_infos[number], classes)
        except ValueError as error:
            raise ValueError(f"{seg_file}: {error}") from error
        mask = sitk.Resample(result.segment_image(number), reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0)
        label[sitk.GetArrayViewFromImage(mask) > 0] = value
    image = sitk.GetImageFromArray(label)
    image.CopyInformation(reference)
    sitk.WriteImage(image, output, True)
