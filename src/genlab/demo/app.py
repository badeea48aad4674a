"""The browser demo's page (Gradio): :func:`build_app` over a :class:`genlab.demo.Demo`.

``genlab serve RUN [RUN ...]`` (the optional extra ``genlab[demo]``) binds it to 127.0.0.1 with
Gradio's analytics off. Tabs: Generate (sampler, steps, seed, guidance, class or prompt; the
network evaluations and wall time under the grid), Denoising path, Samplers side by side (equal
NFE, the same x_T), Inpaint (a mask drawn on the canvas), Super-resolution, Translate and Report.
Each button is also an API endpoint of the same name (``gradio_client``: ``client.predict(...,
api_name="/generate")``). A user's mistake is one sentence in the page (``gr.Error``), never a
traceback; what a run cannot do is said the same way.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from typing import Any

from genlab.demo.actions import MAX_IMAGES, Demo, _message
from genlab.errors import GenlabError

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before gradio is imported: nothing leaves the machine


def _guard(gr, fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn`` with genlab's one-sentence errors (and anything unforeseen) shown in the page as gr.Error."""
    import functools

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except GenlabError as e:
            raise gr.Error(_message(e), print_exception=False) from None
        except (ValueError, TypeError, RuntimeError) as e:  # a library check in its own words
            raise gr.Error(f"{e}", print_exception=False) from None

    return wrapped


def _steps(value) -> int | None:
    return int(value) if value not in (None, "", 0) else None


def _mask(editor) -> Any:
    """The drawn strokes of a gr.ImageEditor value (every layer's alpha), or None."""
    import numpy as np

    if not editor or not editor.get("layers"):
        return None
    layers = [np.asarray(layer) for layer in editor["layers"] if layer is not None]
    masks = [a[..., 3] > 0 if a.ndim == 3 and a.shape[2] == 4 else a.astype(bool) for a in layers]
    return np.logical_or.reduce(masks) if masks else None


def _image_tab(gr, index_label: str, upload_label: str, button: str, out_label: str) -> tuple:
    """The controls of a tab that works on one image: a test-image index or an upload, its button, the result and its account."""
    return (gr.Number(0, label=index_label, precision=0), gr.Image(type="numpy", label=upload_label),
            gr.Button(button, variant="primary"), gr.Image(label=out_label, type="numpy", format="png"), gr.Markdown())


def build_app(demo: Demo):
    """The Gradio Blocks of ``demo`` (not launched)."""
    import gradio as gr

    first = demo.labels[0]
    o = demo.options(first)
    report_dir = tempfile.mkdtemp(prefix="genlab-serve-")

    def describe(label):
        opts = demo.options(label)
        samplers = opts["samplers"] if opts["diffusion"] else []
        return (demo.summary(label), gr.update(choices=opts["samplers"] or ["-"], value=opts["default_sampler"] or "-"),
                gr.update(value=opts["default_steps"] or 0), gr.update(choices=samplers, value=samplers[:4]))

    def generate(label, sampler, steps, seed, n, guidance, class_, prompt, progress=gr.Progress(track_tqdm=True)):
        return demo.generate(label, sampler, _steps(steps), int(seed), int(n), float(guidance), class_, prompt)

    def path(label, sampler, steps, seed, guidance, class_, prompt, progress=gr.Progress()):
        return demo.denoising_path(label, sampler, _steps(steps) or 20, int(seed), guidance=float(guidance), class_=class_,
                                   prompt=prompt, progress=lambda f, d: progress(f, desc=d))

    def compare(label, samplers, nfe, seed, progress=gr.Progress()):
        shown = demo.compare(label, list(samplers or []), int(nfe), int(seed), progress=lambda f, d: progress(f, desc=d))
        return [(image, caption) for image, caption in shown]

    def load_test(label, index):
        image = demo.test_image(label, int(index))
        return {"background": image, "layers": [], "composite": image}

    def inpaint(label, editor, index, exact, seed, steps, progress=gr.Progress(track_tqdm=True)):
        image = None if exact or not editor else editor.get("background")
        return demo.inpaint(label, image, _mask(editor), int(index), int(seed), int(steps))

    def upscale(label, image, index, seed, sampler, steps, progress=gr.Progress(track_tqdm=True)):
        return demo.upscale(label, image, int(index), int(seed), sampler, _steps(steps))

    def translate(label, image, index, direction):
        return demo.translate(label, image, int(index), direction)

    def report():
        md, png = demo.report(report_dir)
        return md, (str(png) if png else None)

    with gr.Blocks(title="genlab", analytics_enabled=False) as app:
        gr.Markdown("# genlab\nTrain, sample and honestly compare generative models. Pick a run; each tab says what it costs.")
        with gr.Row():
            run = gr.Dropdown(demo.labels, value=first, label="run", allow_custom_value=True, scale=3,
                              info="a run directory or exported folder given to genlab serve, or type another path")
            about = gr.Markdown(demo.summary(first))
        with gr.Row():
            sampler = gr.Dropdown(o["samplers"] or ["-"], value=o["default_sampler"] or "-", label="sampler")
            steps = gr.Number(o["default_steps"] or 0, label="steps (0: the sampler's default)", precision=0)
            seed = gr.Number(0, label="seed", precision=0)
            guidance = gr.Number(0.0, label="guidance", info="classifier-free guidance weight (0: none)")
            class_ = gr.Textbox("all", label="class", info="an integer class, or all (class-conditional runs)")
            prompt = gr.Textbox("", label="prompt", info="text-conditioned runs, e.g. a thick 3 on the left")
        with gr.Tab("Generate"):
            n = gr.Slider(1, MAX_IMAGES, value=16, step=1, label="images")
            go = gr.Button("Generate", variant="primary", elem_id="generate")
            out = gr.Image(label="samples", type="numpy", elem_id="samples", format="png")
            info = gr.Markdown(elem_id="generate-info")
        with gr.Tab("Denoising path"):
            go_path = gr.Button("Show the path", variant="primary")
            out_path = gr.Image(label="x_t above the predicted x_0", type="numpy", format="png")
            info_path = gr.Markdown()
        with gr.Tab("Samplers side by side"):
            pick = gr.CheckboxGroup(o["samplers"] if o["diffusion"] else [], value=(o["samplers"] if o["diffusion"] else [])[:4],
                                    label="samplers")
            nfe = gr.Slider(1, 200, value=20, step=1, label="network evaluations per sample (each sampler gets at most this)")
            go_cmp = gr.Button("Compare", variant="primary")
            gallery = gr.Gallery(label="same x_T, equal NFE", columns=2, format="png")
        with gr.Tab("Inpaint"):
            with gr.Row():
                index = gr.Number(0, label="test image", precision=0)
                exact = gr.Checkbox(True, label="use the test image's own pixels (else the canvas's background)")
                load = gr.Button("Load the test image")
            editor = gr.ImageEditor(type="numpy", label="draw over the region to generate", image_mode="RGBA",
                                    brush=gr.Brush(colors=["#ff0000"], color_mode="fixed"))
            in_steps = gr.Number(50, label="RePaint steps", precision=0)
            go_inp = gr.Button("Inpaint", variant="primary")
            out_inp = gr.Image(label="input, mask, masked input, completions", type="numpy", format="png")
            info_inp = gr.Markdown()
        with gr.Tab("Super-resolution"):
            sr_index, sr_image, go_sr, out_sr, info_sr = _image_tab(
                gr, "test image (downsampled, then upscaled)", "or upload a full-size image", "Upscale",
                "low resolution, bicubic, model, truth")
        with gr.Tab("Translate"):
            direction = gr.Radio(["a2b", "b2a"], value="a2b", label="direction")
            tr_index, tr_image, go_tr, out_tr, info_tr = _image_tab(
                gr, "test image of the input domain", "or upload an image", "Translate", "input, translation, the way back")
        with gr.Tab("Report"):
            go_rep = gr.Button("Report of the served runs", variant="primary")
            table = gr.Markdown()
            chart = gr.Image(label="quality against speed", type="filepath")

        g = lambda fn: _guard(gr, fn)  # noqa: E731
        run.change(g(describe), [run], [about, sampler, steps, pick], api_name="describe")
        go.click(g(generate), [run, sampler, steps, seed, n, guidance, class_, prompt], [out, info], api_name="generate")
        go_path.click(g(path), [run, sampler, steps, seed, guidance, class_, prompt], [out_path, info_path], api_name="path")
        go_cmp.click(g(compare), [run, pick, nfe, seed], [gallery], api_name="compare")
        load.click(g(load_test), [run, index], [editor], api_name="test_image")
        go_inp.click(g(inpaint), [run, editor, index, exact, seed, in_steps], [out_inp, info_inp], api_name="inpaint")
        go_sr.click(g(upscale), [run, sr_image, sr_index, seed, sampler, steps], [out_sr, info_sr], api_name="upscale")
        go_tr.click(g(translate), [run, tr_image, tr_index, direction], [out_tr, info_tr], api_name="translate")
        go_rep.click(g(report), [], [table, chart], api_name="report")
    return app


def serve(runs: list, host: str = "127.0.0.1", port: int = 7860, device: str = "cpu", block: bool = True):
    """Build the page over ``runs`` and launch it on ``host:port``; returns the app (``block`` False: at once)."""
    demo = Demo(runs, device=device)
    app = build_app(demo)
    app.queue(default_concurrency_limit=1)  # one model call at a time on a small machine
    app.launch(server_name=host, server_port=port, share=False, inbrowser=False, prevent_thread_lock=not block,
               show_error=True, quiet=True)
    return app
