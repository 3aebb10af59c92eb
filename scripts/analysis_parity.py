# Reference constants of the tests in src/analysis/ (align.rs, groups.rs).
# Made with: pip install scikit-learn scikit-image opencv-python-headless numpy
# (scikit-learn 1.9.1, scikit-image 0.26.0, opencv-python-headless 5.0.0.93, numpy 2.4.6).
import cv2
import numpy as np
from skimage import transform as trans
from sklearn.decomposition import PCA
from sklearn.metrics import mutual_info_score, normalized_mutual_info_score

# align.rs: skimage's Umeyama similarity onto the ArcFace template
dst = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                [41.5493, 92.3655], [70.7299, 92.2041]])
src = np.array([[101.5, 140.25], [180.75, 133.0], [147.0, 181.5], [115.25, 226.0],
                [178.5, 221.75]])
t = trans.SimilarityTransform()
t.estimate(src, dst)
print("SKIMAGE_PARAMS", [float(v) for v in t.params[:2].ravel()])

# align.rs: cv2.warpAffine, bilinear, BORDER_CONSTANT 0, reaching past every edge
img = np.fromfunction(lambda y, x, c: (x * 37 + y * 11 + c * 71) % 256,
                      (8, 10, 3)).astype(np.uint8)
a, b = 1.37 * np.cos(0.3), 1.37 * np.sin(0.3)
M = np.array([[a, -b, 1.6], [b, a, -2.2]])
print("CV2_WARP_HEX", cv2.warpAffine(img, M, (14, 12), borderValue=0.0).tobytes().hex())

# groups.rs: NMI (arithmetic normaliser, the default) and MI in nats
a = [0, 0, 1, 1, 2, 2, 2, 3]
b = [0, 0, 0, 1, 1, 2, 2, 2]
print("NMI/MI 1", normalized_mutual_info_score(a, b), mutual_info_score(a, b))
g = [i * 7 % 5 for i in range(40)]
s = [(i * 3) % 4 + (i % 5 == 0) for i in range(40)]
print("NMI/MI 2", normalized_mutual_info_score(g, s), mutual_info_score(g, s))

# groups.rs: PCA explained variance and |projections| of the first three rows
X = np.fromfunction(lambda i, j: (i * i * 3 + j * 5 + i * j) % 17, (30, 6)).astype(float)
p = PCA(2).fit(X)
print("PCA", p.explained_variance_.tolist(), np.abs(p.transform(X)[:3]).tolist())
