"""RoIAlign max mode (placeholder until the kernels land)."""


def roi_align_max(input, rois, ph, pw, scale, sampling_ratio, aligned):
    raise NotImplementedError("roi_align(mode='max') is being implemented (issue 2)")
