"""CT quality assurance with Body Part Regression (MIC-DKFZ bpreg 1.1.0 model, run through OpenVINO).

Every axial slice gets a score on a head-to-toe scale (0 = pelvis start, 100 = eyes end); the score
curve gives the body part examined, slice-order and z-spacing checks, landmarks and regions.
"""
