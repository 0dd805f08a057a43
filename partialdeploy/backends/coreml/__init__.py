"""CoreML: an ML program (.mlpackage); converts anywhere coremltools installs, predicts on macOS."""

import re

from partialdeploy.backends import Backend
from partialdeploy.errors import UserError

_DEPLOYMENT_TARGET = re.compile(r"^(iOS|macOS|tvOS|watchOS|visionOS)\d+$")


def _check(fields: dict, where: str) -> None:
    mdt = fields.get("minimum_deployment_target")
    if mdt is not None and not _DEPLOYMENT_TARGET.match(mdt):
        raise UserError(f"{where}: field 'minimum_deployment_target' {mdt!r} is not like iOS17 or macOS14")


BACKEND = Backend(
    name="coreml",
    label="CoreML",
    runner="partialdeploy.backends.coreml.runner:CoreMLRunner",
    dists=("coremltools",),
    targets={"coreml": "partialdeploy.backends.coreml.target:CoreMLTarget"},
    suffixes=(".mlpackage", ".mlmodel"),
    options={"minimum_deployment_target": ((str,), "CoreML, e.g. iOS16, iOS17, macOS14"),
             "compute_units": ((str,), "CoreML: ALL, CPU_ONLY, CPU_AND_GPU, CPU_AND_NE",
                               ("ALL", "CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE"))},
    check_options=_check,
)
