"""What each synthetic modality looks like: its headers, its kinds of series, its tissue signals."""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.uid import ComputedRadiographyImageStorage, CTImageStorage, MRImageStorage

from reconciler.demo.phantoms import AP, LAT, PA, ChestView

Attrs = dict[str, object]

# Signal of each tissue, in phantoms.Tissue order.
_CT_HU = (-1000.0, -100.0, 40.0, -830.0, 700.0, 10.0, 180.0, 260.0)  # with IV contrast
_MR_T1 = (0.0, 1500.0, 650.0, 60.0, 1100.0, 220.0, 350.0, 120.0)  # flowing blood is dark
_MR_T2 = (0.0, 1100.0, 480.0, 40.0, 520.0, 2300.0, 420.0, 90.0)
_MR_T1_POST = (0.0, 1500.0, 700.0, 60.0, 1100.0, 220.0, 1300.0, 1900.0)


@dataclass(frozen=True)
class SeriesSpec:
    description: str
    window: tuple[float, float]  # centre, width
    header: Attrs  # modality-specific attributes of this kind of series
    tissue: tuple[float, ...] = ()  # axial: value of each tissue label
    thickness: float = 0.0  # axial: mm, slices are contiguous
    view: ChestView | None = None  # projection


@dataclass(frozen=True)
class ModalitySpec:
    sop_class: str
    image_type: tuple[str, ...]
    matrix: int  # default rows and columns: realistic, yet files stay moderate
    fov_mm: float
    bits_stored: int
    signed: bool
    intercept: float | None  # rescale to HU, CT only
    noise: float  # standard deviation, in the units of the tissue values
    model: str
    body_part: str
    description: str  # default study description
    series: tuple[SeriesSpec, ...]


def _ct_header(kernel: str) -> Attrs:
    return {"ConvolutionKernel": kernel, "KVP": 120, "XRayTubeCurrent": 200}


def _cr_header(view: str, row_direction: str) -> Attrs:
    # Columns run towards row_direction, rows towards the feet.
    return {"ViewPosition": view, "PatientOrientation": [row_direction, "F"], "KVP": 110}


def _mr_header(tr: float, te: float, etl: int) -> Attrs:
    return {
        "ScanningSequence": "SE",
        "SequenceVariant": "SK",
        "ScanOptions": "",
        "MRAcquisitionType": "2D",
        "RepetitionTime": tr,
        "EchoTime": te,
        "EchoTrainLength": etl,
        "MagneticFieldStrength": 1.5,
        "ImagingFrequency": 63.87,
        "ImagedNucleus": "1H",
    }


MODALITIES: dict[str, ModalitySpec] = {
    "CT": ModalitySpec(
        sop_class=CTImageStorage,
        image_type=("ORIGINAL", "PRIMARY", "AXIAL"),
        matrix=256,
        fov_mm=400.0,
        bits_stored=16,
        signed=True,
        intercept=-1024.0,
        noise=12.0,
        model="SYNTH CT 64",
        body_part="CHEST",
        description="CT CHEST W CONTRAST",
        series=(
            SeriesSpec("AXIAL 5.0 SOFT TISSUE", (40, 400), _ct_header("STANDARD"), _CT_HU, 5.0),
            SeriesSpec("AXIAL 1.25 LUNG", (-600, 1500), _ct_header("LUNG"), _CT_HU, 1.25),
            SeriesSpec("AXIAL 2.5 BONE", (500, 2000), _ct_header("BONE"), _CT_HU, 2.5),
        ),
    ),
    "MR": ModalitySpec(
        sop_class=MRImageStorage,
        image_type=("ORIGINAL", "PRIMARY", "M", "ND"),
        matrix=256,
        fov_mm=380.0,
        bits_stored=12,
        signed=False,
        intercept=None,
        noise=15.0,
        model="SYNTH MR 1.5T",
        body_part="TSPINE",
        description="MR THORACIC SPINE WO W CONTRAST",
        series=(
            SeriesSpec("AX T1 FSE", (800, 1600), _mr_header(550, 12, 3), _MR_T1, 4.0),
            SeriesSpec("AX T2 FSE", (1000, 2000), _mr_header(4000, 100, 16), _MR_T2, 4.0),
            SeriesSpec("AX T1 FSE POST", (900, 1800), _mr_header(550, 12, 3), _MR_T1_POST, 4.0),
        ),
    ),
    "CR": ModalitySpec(
        sop_class=ComputedRadiographyImageStorage,
        image_type=("ORIGINAL", "PRIMARY"),
        matrix=512,
        fov_mm=430.0,
        bits_stored=12,
        signed=False,
        intercept=None,
        noise=20.0,
        model="SYNTH CR",
        body_part="CHEST",
        description="XR CHEST 2 VIEWS",
        series=(
            SeriesSpec("CHEST PA", (2048, 4096), _cr_header("PA", "L"), view=PA),
            SeriesSpec("CHEST LAT", (2048, 4096), _cr_header("LL", "P"), view=LAT),
            SeriesSpec("CHEST AP", (2048, 4096), _cr_header("AP", "L"), view=AP),
        ),
    ),
}
