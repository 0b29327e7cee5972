"""The Gradio app: its functions' limits and errors, its API through gradio_client, and a crowd of requests."""

import concurrent.futures
import os
import resource
import socket

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler
from PIL import Image

from ddpm_kiit import GaussianBlurScheduler, KiitDDPMPipeline, KiitDDPMScheduler, SimpleUNet2DModel
from ddpm_kiit.app import AppLimits, PipelineCache, forward, generate, new_quiz, reverse, score_guess, with_scheduler

gradio = pytest.importorskip("gradio", reason="the app needs the [app] extra: pip install -e '.[app]'")

TINY = {"block_out_channels": (8, 16), "time_embedding_dim": 8, "norm_num_groups": 4, "attention_type": None}


def _save_pipeline(folder, scheduler):
    torch.manual_seed(0)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **TINY)
    KiitDDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(folder)
    return str(folder)


def _save_conditional_pipelines(root):
    """A class-conditional pipeline of 10 classes and a text-to-image one with a tiny encoder of a few captions."""
    from ddpm_kiit import KiitTextToImagePipeline
    from ddpm_kiit.text import new_text_encoder, train_caption_tokenizer

    torch.manual_seed(0)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, num_class_embeds=10, **TINY)
    KiitDDPMPipeline(unet=unet, scheduler=KiitDDPMScheduler(num_train_timesteps=40)).save_pretrained(root / "class")
    tokenizer = train_caption_tokenizer(["red apple", "grinning face", "flag: India"], max_length=6)
    encoder = new_text_encoder(tokenizer, hidden_size=16, num_layers=1, num_heads=2)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=3, out_channels=3, cross_attention_dim=16, **TINY)
    scheduler = KiitDDPMScheduler(num_train_timesteps=40)
    KiitTextToImagePipeline(unet, scheduler, encoder, tokenizer).save_pretrained(root / "text")
    return str(root / "class"), str(root / "text")


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory):
    root = tmp_path_factory.mktemp("app")
    noise = _save_pipeline(root / "noise", KiitDDPMScheduler(num_train_timesteps=40))
    blur = GaussianBlurScheduler(num_train_timesteps=10)
    blur.fit_initial_distribution(torch.rand(32, 1, 16, 16) * 2 - 1)
    cold = _save_pipeline(root / "cold", blur)
    labelled, text = _save_conditional_pipelines(root)
    return {"root": root, "noise": noise, "cold": cold, "class": labelled, "text": text}


@pytest.fixture
def cache(pipelines):
    return PipelineCache([pipelines["root"]], AppLimits(max_images=6, max_steps=30))


def test_generate_differs_by_seed_and_repeats_with_the_same_seed(cache, pipelines):
    first = generate(cache, pipelines["noise"], "ddim", steps=5, seed=1, num_images=2)
    again = generate(cache, pipelines["noise"], "ddim", steps=5, seed=1, num_images=2)
    other = generate(cache, pipelines["noise"], "ddim", steps=5, seed=2, num_images=2)
    as_array = lambda result: np.stack([np.asarray(image) for image in result["images"]])  # noqa: E731
    assert len(first["images"]) == 2 and first["strip"].height == 2 * 64  # x_t over predicted x0, enlarged
    np.testing.assert_array_equal(as_array(first), as_array(again))
    assert np.abs(as_array(first).astype(int) - as_array(other)).mean() > 10


@pytest.mark.parametrize("name", ["default", "kiit", "ddpm", "ddim", "dpm-solver++", "euler", "euler-ancestral"])
def test_every_noise_scheduler_generates(cache, pipelines, name):
    progress = []
    result = generate(cache, pipelines["noise"], name, steps=4, num_images=1, on_step=lambda i, n: progress.append(i))
    assert len(result["images"]) == 1 and progress == [1, 2, 3, 4]


def test_blur_pipelines_take_their_samplers_and_refuse_noise_ones(cache, pipelines):
    naive = generate(cache, pipelines["cold"], "blur-naive", steps=5, num_images=2)
    improved = generate(cache, pipelines["cold"], "blur-improved", steps=5, num_images=2)
    assert len(naive["images"]) == len(improved["images"]) == 2
    with pytest.raises(ValueError, match="blurs instead of adding noise"):
        generate(cache, pipelines["cold"], "ddim", steps=5)
    with pytest.raises(ValueError, match="is for blur pipelines"):
        generate(cache, pipelines["noise"], "blur-naive", steps=5)


def test_class_and_prompt_inputs_reach_the_pipelines_that_take_them(cache, pipelines):
    seven = generate(cache, pipelines["class"], "ddim", steps=3, num_images=2, class_label=7, guidance_scale=2.0)
    assert len(seven["images"]) == 2 and "2 image(s) of class 7 (guidance 2)" in seven["info"]
    unguided = generate(cache, pipelines["class"], "ddim", steps=3, num_images=2, guidance_scale=2.0)
    assert "of class" not in unguided["info"], "no class: the slider's guidance is not applied"
    apple = generate(
        cache, pipelines["text"], "euler", steps=3, num_images=2, prompt="red apple", negative_prompt="flag: India"
    )
    assert len(apple["images"]) == 2 and 'of "red apple", not "flag: India"' in apple["info"]
    assert apple["images"][0].size == (16, 16) and apple["images"][0].mode == "RGB"
    with pytest.raises(ValueError, match="say what to draw with a prompt"):
        generate(cache, pipelines["text"], "ddim", steps=3)
    with pytest.raises(ValueError, match="takes no prompt"):
        generate(cache, pipelines["noise"], "ddim", steps=3, prompt="red apple")
    with pytest.raises(ValueError, match="must lie in 0..9"):
        generate(cache, pipelines["class"], "ddim", steps=3, class_label=12)
    with pytest.raises(ValueError, match="this pipeline's unet is unconditional"):
        generate(cache, pipelines["noise"], "ddim", steps=3, class_label=1)


def test_learn_tab_works_on_conditional_pipelines_without_a_condition(cache, pipelines):
    for kind in ("class", "text"):
        assert forward(cache, pipelines[kind], None, t=20, seed=0)["noisy"].size == (128, 128)
        assert "Started at t = " in reverse(cache, pipelines[kind], None, t=10, seed=0)["info"]


def test_switching_schedulers_leaves_the_cached_pipeline_alone(cache, pipelines):
    pipe = cache.get(pipelines["noise"])
    swapped = with_scheduler(pipe, "euler")
    assert type(swapped.scheduler) is EulerDiscreteScheduler and swapped.unet is pipe.unet
    assert type(pipe.scheduler) is KiitDDPMScheduler
    assert cache.get(pipelines["noise"]) is pipe  # cached: switching back is instant


def test_fast_inference_reaches_every_scheduler_the_app_swaps_in(pipelines, monkeypatch):
    from ddpm_kiit.pipelines import pipeline_kiit_ddpm

    monkeypatch.setattr(pipeline_kiit_ddpm, "native_bf16", lambda device_type: True)  # as on an AMX CPU or a GPU
    fast = PipelineCache([pipelines["root"]], AppLimits(max_images=6, max_steps=30), fast_inference=True)
    pipe = fast.get(pipelines["noise"])
    assert pipe.autocast_dtype == torch.bfloat16
    assert pipe.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    dtypes = []
    pipe.unet.conv_out.register_forward_hook(lambda module, args, output: dtypes.append(output.dtype))
    assert with_scheduler(pipe, "ddim").autocast_dtype == torch.bfloat16
    result = generate(fast, pipelines["noise"], "ddim", steps=3, num_images=1)
    assert len(result["images"]) == 1 and set(dtypes) == {torch.bfloat16}
    assert "seed 0, bfloat16 autocast:" in result["info"]
    plain = PipelineCache([pipelines["root"]]).get(pipelines["noise"])
    assert plain.autocast_dtype is None and with_scheduler(plain, "ddim").autocast_dtype is None


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_images": 7}, "Number of images must be a whole number from 1 to 6"),
        ({"num_images": 0}, "Number of images must be"),
        ({"steps": 0}, "Steps must be a whole number from 1 to 30"),
        ({"steps": 10**6}, "Steps must be"),
        ({"steps": 2.5}, "Steps must be"),
        ({"seed": -1}, "Seed must be"),
        ({"scheduler": "magic"}, "Unknown scheduler 'magic'"),
    ],
)
def test_out_of_range_requests_get_clear_errors(cache, pipelines, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(cache, pipelines["noise"], **{"steps": 5, **kwargs})


def test_pipelines_outside_the_allowed_folders_and_missing_hub_ids_are_refused(cache, pipelines, tmp_path):
    outside = _save_pipeline(tmp_path / "elsewhere", KiitDDPMScheduler(num_train_timesteps=10))
    with pytest.raises(ValueError, match="outside the folders this app may read.*--allow-dir"):
        cache.get(outside)
    with pytest.raises(ValueError, match="outside the folders"):
        cache.get(os.path.join(pipelines["root"], "..", "..", "etc"))
    with pytest.raises(ValueError, match="not a saved pipeline folder"):
        cache.get(str(pipelines["root"]))
    with pytest.raises(ValueError, match="Choose a pipeline"):
        cache.get("  ")
    with pytest.raises(ValueError, match="neither a pipeline folder nor a Hub id"):
        cache.get("not a valid id!")
    with pytest.raises(ValueError, match="only when started with --allow-hub or --allow-repo someone/something"):
        cache.get("someone/something")  # Hub ids are off by default
    hub = PipelineCache([pipelines["root"]], allow_hub=True)
    with pytest.raises(ValueError, match="Could not load 'nobody-here/no-such-pipeline'"):
        hub.get("nobody-here/no-such-pipeline")


def test_oversized_pipelines_are_refused(pipelines):
    small_limits = PipelineCache([pipelines["root"]], AppLimits(max_sample_size=8))
    with pytest.raises(ValueError, match="makes 16-pixel images; this app serves at most 8"):
        small_limits.get(pipelines["noise"])


def test_forward_reports_alpha_bar_and_snr_and_changes_with_t(cache, pipelines):
    picture = Image.fromarray((np.arange(64 * 64).reshape(64, 64) % 256).astype(np.uint8))
    early = forward(cache, pipelines["noise"], picture, t=0, seed=0)
    late = forward(cache, pipelines["noise"], picture, t=39, seed=0)
    scheduler = cache.get(pipelines["noise"]).scheduler
    alpha_bar = float(scheduler.alphas_cumprod[39])
    assert f"alpha_bar_t = {alpha_bar:.4f}" in late["info"]
    assert f"signal-to-noise ratio = {alpha_bar / (1 - alpha_bar):.3g}" in late["info"]
    difference = np.abs(np.asarray(early["noisy"], dtype=int) - np.asarray(late["noisy"], dtype=int)).mean()
    assert difference > 20
    blurred = forward(cache, pipelines["cold"], None, t=9, seed=0)  # no upload: the model's own sample
    assert "blur width sigma_t = 32.00 px" in blurred["info"]
    with pytest.raises(ValueError, match="t must be a whole number from 0 to 39"):
        forward(cache, pipelines["noise"], picture, t=40)


@pytest.mark.parametrize("kind", ["noise", "cold"])
def test_reverse_runs_from_t_back_to_zero(cache, pipelines, kind):
    steps = []
    result = reverse(cache, pipelines[kind], None, t=5, seed=0, on_step=lambda i, n: steps.append(n))
    assert steps and result["strip"].height == 2 * 64 and "Started at t = " in result["info"]


def test_a_distilled_student_previews_in_its_own_steps(cache, pipelines):
    """A student (DDIM, `default_num_inference_steps`, what `ddpm-kiit distill` writes) sets the steps slider to its
    own count when chosen, and the Learn tab takes it back in those steps, not in DDIM's 50."""
    from diffusers import DDIMScheduler

    from ddpm_kiit.app import DownloadFolder, _Handlers

    torch.manual_seed(0)
    unet = SimpleUNet2DModel(sample_size=16, in_channels=1, out_channels=1, **TINY)
    scheduler = DDIMScheduler(num_train_timesteps=40, timestep_spacing="trailing", clip_sample=False)
    student = pipelines["root"] / "student"
    KiitDDPMPipeline(unet=unet, scheduler=scheduler, default_num_inference_steps=4).save_pretrained(student)
    handlers = _Handlers(cache, DownloadFolder(2), gradio)
    steps_update, _ = handlers.pipeline_changed(str(student), 30, 0)
    assert steps_update.constructor_args == {"maximum": 30, "value": 4}
    steps_update, _ = handlers.pipeline_changed(pipelines["noise"], 20, 0)
    assert "value" not in steps_update.constructor_args  # an undistilled pipeline keeps what the user chose
    chain = []
    result = reverse(cache, str(student), None, t=39, seed=0, on_step=lambda i, n: chain.append(n))
    assert set(chain) == {4} and "took 4 model steps" in result["info"]


def test_quiz_scores_guesses():
    assert score_guess(30, 30, 300)[0] == 100
    assert score_guess(130, 30, 300)[0] == 0  # a third of the range off
    assert 0 < score_guess(60, 30, 300)[0] < 100
    with pytest.raises(ValueError, match="Your guess must be a whole number from 0 to 299"):
        score_guess(300, 30, 300)


def test_quiz_hides_a_level_drawn_from_the_seed(cache, pipelines):
    first, again = new_quiz(cache, pipelines["noise"], seed=3), new_quiz(cache, pipelines["noise"], seed=3)
    assert first["t"] == again["t"] and 0 <= first["t"] < 40


# ---------------------------------------------------------------------------------------------- the served app


def _free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def served(pipelines):
    from ddpm_kiit.app import build_app

    demo = build_app(pipelines["noise"], [pipelines["root"]], AppLimits(max_images=6, max_steps=30, queue_size=4))
    port = _free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    yield {"url": f"http://127.0.0.1:{port}/", "demo": demo, **pipelines}
    demo.close()


def test_the_api_returns_images(served):
    from gradio_client import Client

    client = Client(served["url"], verbose=False)
    gallery, strip, info, download = client.predict(served["noise"], "ddim", 5, 0, 3, api_name="/generate")
    assert len(gallery) == 3 and "3 image(s)" in info
    *_, options_info, _ = client.predict(
        served["noise"], "kiit", 3, 0, 1, "fixed_large", True, 1.5, api_name="/generate"
    )
    assert "(fixed_large, thresholded at 1.5)" in options_info
    *_, text_info, _ = client.predict(
        served["text"], "ddim", 3, 0, 2, "default", False, 1.5, "", "red apple", "", 4.0, api_name="/generate"
    )
    assert '2 image(s) of "red apple" (guidance 4)' in text_info
    images = [Image.open(item["image"]) for item in gallery]
    assert images[0].size == (16, 16) and Image.open(strip).height == 2 * 64
    assert Image.open(download).size == (3 * 16, 16)
    clean, noisy, level_info = client.predict(served["noise"], None, 20, 0, api_name="/forward")
    assert "alpha_bar_t" in level_info and Image.open(noisy).size == (128, 128)
    # Gradio's sliders check their own bounds before our functions see the values; both say what is allowed.
    with pytest.raises(Exception, match="1000000 is greater than maximum value 30"):
        client.predict(served["noise"], "ddim", 10**6, 0, 1, api_name="/generate")
    with pytest.raises(Exception, match="0 is less than minimum value 1"):
        client.predict(served["noise"], "ddim", 0, 0, 1, api_name="/generate")
    with pytest.raises(Exception, match="100 is greater than maximum value 6"):
        client.predict(served["noise"], "ddim", 5, 0, 100, api_name="/generate")
    with pytest.raises(Exception, match="magic is not in the list of choices"):
        client.predict(served["noise"], "magic", 5, 0, 1, api_name="/generate")
    with pytest.raises(Exception, match="outside the folders"):
        client.predict("/etc", "ddim", 5, 0, 1, api_name="/generate")
    with pytest.raises(Exception, match="only when started with --allow-hub"):
        client.predict("nobody-here/nothing", "ddim", 5, 0, 1, api_name="/generate")


def test_twenty_concurrent_requests_finish_or_are_refused_clearly(served):
    from gradio_client import Client

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    client = Client(served["url"], verbose=False)

    def one(seed):
        try:
            client.predict(served["noise"], "ddim", 10, seed, 2, api_name="/generate")
            return "done"
        except Exception as error:  # the queue is full: Gradio refuses with a message
            return f"refused: {error}"

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        outcomes = list(pool.map(one, range(20)))
    done = outcomes.count("done")
    refused = [o for o in outcomes if o != "done"]
    print(f"{done} finished, {len(refused)} refused")
    assert done >= 1 and done + len(refused) == 20
    assert all("queue" in o.lower() or "full" in o.lower() for o in refused), refused
    # The server is still up and answers the next request; memory did not run away.
    assert len(client.predict(served["noise"], "ddim", 3, 0, 1, api_name="/generate")[0]) == 1
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
    assert grown_mib < 500, f"peak memory grew by {grown_mib:.0f} MiB"


# ------------------------------------------------------------------------------------------------- in a browser

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def browser_page(tmp_path):
    playwright_api = pytest.importorskip(
        "playwright.sync_api", reason="the browser test needs `pip install playwright`"
    )
    if not os.path.exists(CHROMIUM):
        pytest.skip(
            f"NOT TESTED IN A BROWSER: {CHROMIUM} is missing. Install it with `apt-get install chromium` "
            "(.ci/run does) to run the end-to-end test of the app."
        )
    with playwright_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"), executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield context.new_page()
        finally:
            context.close()


def _set_number(page, selector, value, attempts=3):
    """Types `value` into a number box and waits until the page holds it. A box in a tab that has just been opened
    can be re-rendered by Gradio as it mounts, dropping what was typed (seen once in a CI run, at the Learn tab's
    first box): then it is typed again, up to `attempts` times."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeoutError

    box = page.locator(f"{selector} input[type=number]")
    for attempt in range(attempts):
        box.fill(str(value))
        box.press("Tab")  # Gradio takes a typed number when the box loses focus
        try:
            page.wait_for_function(
                "([selector, value]) => document.querySelector(selector + ' input[type=number]').value === value",
                arg=[selector, str(value)],
                timeout=10_000,
            )
            return
        except PlaywrightTimeoutError:
            if attempt == attempts - 1:
                raise


def _gallery(page, previous=None, timeout=60_000):
    """The gallery's image sources once it shows images (different from `previous`, when given)."""
    page.wait_for_function(
        """previous => {
            const sources = [...document.querySelectorAll('#gallery img')].map(image => image.src);
            return sources.length > 0 && JSON.stringify(sources) !== JSON.stringify(previous);
        }""",
        arg=previous,
        timeout=timeout,
    )
    return page.eval_on_selector_all("#gallery img", "images => images.map(image => image.src)")


def _pixels(page, source):
    import io

    return np.asarray(Image.open(io.BytesIO(page.request.get(source).body())).convert("L"), dtype=int)


def test_the_app_in_a_browser(served, browser_page):
    page = browser_page
    page.goto(served["url"])
    # The page fits its sliders to the pipeline (40 levels) and the limits (30 steps) once it has loaded it.
    page.wait_for_function("document.querySelector('#steps input[type=number]')?.max == '30'", timeout=60_000)
    _set_number(page, "#steps", 5)
    page.locator("#scheduler input").fill("ddim")
    page.get_by_role("option", name="ddim", exact=True).click()

    page.click("#generate")
    seed0 = _gallery(page)
    assert len(seed0) == 4
    assert "DDIMScheduler, 5 steps, seed 0" in page.inner_text("#generate-info")

    _set_number(page, "#seed", 1)
    page.click("#generate")
    seed1 = _gallery(page, previous=seed0)
    assert np.abs(_pixels(page, seed0[0]) - _pixels(page, seed1[0])).mean() > 10  # a new seed, new images

    page.locator("#scheduler input").fill("euler")
    page.get_by_role("option", name="euler", exact=True).click()
    page.click("#generate")
    _gallery(page, previous=seed1)
    page.wait_for_function("document.querySelector('#generate-info')?.innerText.includes('EulerDiscreteScheduler')")
    assert page.locator("#strip img").count() == 1

    page.get_by_role("tab", name="Learn").click()
    _set_number(page, "#level", 2)
    page.wait_for_function("document.querySelector('#level-info')?.innerText.includes('t = 2 of 39')")
    slightly = page.get_attribute("#noisy img", "src")
    _set_number(page, "#level", 39)
    page.wait_for_function("document.querySelector('#level-info')?.innerText.includes('t = 39 of 39')")
    page.wait_for_function("previous => document.querySelector('#noisy img')?.src !== previous", arg=slightly)
    very = page.get_attribute("#noisy img", "src")
    assert np.abs(_pixels(page, slightly) - _pixels(page, very)).mean() > 2  # x0 is an untrained model's noisy sample

    # A class-conditional pipeline with a class typed in, then a text-to-image one with a prompt.
    page.get_by_role("tab", name="Generate").click()
    shown = _gallery(page)
    for pipeline, box, value, said in (
        (served["class"], "#class", "3", "of class 3"),
        (served["text"], "#prompt", "red apple", 'of "red apple"'),
    ):
        page.locator("#class textarea, #class input").first.fill("")
        page.locator(f"{box} textarea, {box} input").first.fill(value)
        pipeline_box = page.get_by_label("Pipeline", exact=True)
        pipeline_box.fill(pipeline)
        pipeline_box.press("Enter")
        page.click("#generate")
        shown = _gallery(page, previous=shown)
        page.wait_for_function("said => document.querySelector('#generate-info')?.innerText.includes(said)", arg=said)

    output = os.environ.get("DDPM_KIIT_TEST_OUTPUT", os.path.join(os.path.dirname(__file__), "..", "test-output"))
    os.makedirs(output, exist_ok=True)
    page.get_by_role("tab", name="Generate").click()
    page.screenshot(path=os.path.join(output, "app-generate.png"), full_page=True)
    assert os.path.getsize(os.path.join(output, "app-generate.png")) > 10_000


def test_launch_binds_to_loopback_and_allows_the_pipelines_folder(pipelines, tmp_path, monkeypatch):
    import urllib.request

    from ddpm_kiit.app import launch

    monkeypatch.chdir(tmp_path)
    port = _free_port()
    demo = launch(pipelines["noise"], port=port, prevent_thread_lock=True, quiet=True)
    try:
        assert demo.server_name == "127.0.0.1"
        assert urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=30).status == 200
        allowed = demo.ddpm_kiit_cache.allowed_dirs
        assert tmp_path.resolve() in allowed and pipelines["root"].resolve() in allowed
    finally:
        demo.close()


def test_generate_with_a_variance_type_and_thresholding(cache, pipelines):
    result = generate(
        cache,
        pipelines["noise"],
        "default",
        steps=4,
        num_images=1,
        variance_type="fixed_large",
        thresholding=True,
        sample_max_value=1.5,
    )
    assert "KiitDDPMScheduler (fixed_large, thresholded at 1.5)" in result["info"]
    ddim = generate(
        cache, pipelines["noise"], "ddim", steps=4, num_images=1, variance_type="fixed_large", thresholding=True
    )
    assert "DDIMScheduler (thresholded at 1)," in ddim["info"]  # DDIM has no variance type; thresholding it has
    with pytest.raises(ValueError, match="needs a model that predicts its variance too"):
        generate(cache, pipelines["noise"], "kiit", steps=4, num_images=1, variance_type="learned_range")
    with pytest.raises(ValueError, match="are for noise pipelines; this one blurs"):
        generate(cache, pipelines["cold"], "default", steps=4, num_images=1, thresholding=True)
    assert type(cache.get(pipelines["noise"]).scheduler) is KiitDDPMScheduler  # the cached pipeline is untouched
    assert not cache.get(pipelines["noise"]).scheduler.config.thresholding
