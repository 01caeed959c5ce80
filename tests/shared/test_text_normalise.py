"""Text normalisation for speech: written forms become what a reader says."""
import pytest

from omniforge_shared.text_normalise import cardinal, normalise, ordinal, year


@pytest.mark.parametrize("n,words", [(0, "zero"), (13, "thirteen"), (40, "forty"), (99, "ninety nine"),
                                     (101, "one hundred one"), (1000, "one thousand"),
                                     (1_234_567, "one million two hundred thirty four thousand five hundred sixty seven")])
def test_cardinals(n, words):
    assert cardinal(n) == words


@pytest.mark.parametrize("n,words", [(1, "first"), (2, "second"), (3, "third"), (12, "twelfth"), (20, "twentieth"),
                                     (21, "twenty first"), (100, "one hundredth")])
def test_ordinals(n, words):
    assert ordinal(n) == words


@pytest.mark.parametrize("n,words", [(1999, "nineteen ninety nine"), (2005, "two thousand five"),
                                     (2026, "twenty twenty six"), (1900, "nineteen hundred"), (1205, "twelve oh five")])
def test_years(n, words):
    assert year(n) == words


@pytest.mark.parametrize("text,said", [
    ("Dr. Smith paid $3.50 at 9:05 pm.", "doctor smith paid three dollars fifty cents at nine oh five p m."),
    ("It is 14:30 on 2026-12-01.", "it is fourteen thirty on december first twenty twenty six."),
    ("Meet me at 7:00.", "meet me at seven o'clock."),
    ("My flight leaves on March 6, 2013.", "my flight leaves on march sixth, twenty thirteen."),
    ("It was built in 1998.", "it was built in nineteen ninety eight."),
    ("Back by 6:15 p.m. tomorrow", "back by six fifteen p m tomorrow"),
    ("Born 12/25/1990, she was the 2nd of 3.", "born december twenty fifth nineteen ninety, she was the second of three."),
    ("Prices rose 25% to €1,200.", "prices rose twenty five percent to one thousand two hundred euros."),
    ("It costs $1.", "it costs one dollar."),
    ("Pi is about 3.14159.", "pi is about three point one four one five nine."),
    ("The temperature fell to -5 degrees.", "the temperature fell to minus five degrees."),
    ("Tom & Jerry, e.g. cartoons.", "tom and jerry, for example cartoons."),
    ("In 1492 and 2024 alike", "in fourteen ninety two and twenty twenty four alike"),
    ("A budget of $2.5 million", "a budget of two point five million dollars"),
    ("Call 555", "call five hundred fifty five"),
])
def test_sentences(text, said):
    assert normalise(text) == said


def test_nothing_to_normalise_is_left_alone_but_lower_cased():
    assert normalise("  Hello,   World!  ") == "hello, world!"
