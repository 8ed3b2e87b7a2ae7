"""VGG as a feature network: Grad-CAM and Grad-CAM++ on any layer by its paper name
(:mod:`.gradcam`), heatmap sheets of image files (:mod:`.explain`), feature-map grids and
pooled embeddings (:mod:`.maps`), LPIPS and perceptual losses (:mod:`.perceptual`), and neural
style transfer (:mod:`.style`). Every use applies the backbone's own input normalisation
(:mod:`vggnet.models.normalization`)."""

from .gradcam import METHODS, CamResult, check_layer, default_layer, grad_cam

__all__ = ["METHODS", "CamResult", "check_layer", "default_layer", "grad_cam"]
