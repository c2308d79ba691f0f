"""Reading images as users' files come: phone photos carry their orientation in EXIF."""

from PIL import Image

from eca_models.data.images import open_rgb


def test_a_photo_is_read_upright_as_its_exif_orientation_says(tmp_path):
    stored = Image.new("RGB", (40, 20), (200, 10, 10))
    stored.paste((10, 10, 200), (0, 0, 10, 20))  # blue on the stored image's left edge
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 degrees clockwise to display
    stored.save(tmp_path / "phone.jpg", exif=exif.tobytes(), quality=95)
    upright = open_rgb(tmp_path / "phone.jpg")
    assert upright.size == (20, 40)  # portrait, as the phone showed it
    top = upright.getpixel((10, 2))
    assert top[2] > 150 and top[0] < 100  # the stored left edge is now on top
    stored.save(tmp_path / "plain.jpg", quality=95)
    assert open_rgb(tmp_path / "plain.jpg").size == (40, 20)
