"""Noise schedule, DDIM sampling, guidance and long-video windowing (no UNet inside).

Entry points for the stages: ``conditions.build_conditions`` (photo + poses -> Conditions),
``render.make_initial_latent`` (seeded x_T with the noise prior), ``render.render_latents``
(one clip, windowed when longer than the window, resumable) and ``segments.plan_segments``
(last-frame continuation). The pieces underneath are small pure functions:
``schedule`` (tables, step list, prior), ``windows`` (index math), ``ddim`` (the update),
``denoiser`` (UNet + CFG + window averaging).
"""
