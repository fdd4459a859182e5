"""Real English sentences for the MiniLM recipe: calibration and held-out validation.

``CALIBRATION_TEXTS`` pick the outlier channels of the int8 CPU graph and the activation ranges of
the QNN graphs; ``VALIDATION_TEXTS`` are held out and check the quantized graphs against the float
one. :func:`paragraphs` joins them into longer inputs for the longer sequence buckets.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

__all__ = ["CALIBRATION_TEXTS", "VALIDATION_TEXTS", "paragraphs"]

CALIBRATION_TEXTS: Final = (
    "How do I reset my password if I no longer have access to my email?",
    "The Eiffel Tower was completed in 1889 for the World's Fair in Paris.",
    "Preheat the oven to 180 degrees and grease a round cake tin.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Can you recommend a quiet café near the station where I can work for a few hours?",
    "The quarterly revenue grew by 12 percent, driven mostly by subscriptions.",
    "Our flight was delayed for three hours because of a storm over the Atlantic.",
    "Python lists are mutable, while tuples cannot be changed after they are created.",
    "She finally finished the marathon in just under four hours.",
    "What are the side effects of taking ibuprofen every day?",
    "The committee will vote on the proposal next Thursday afternoon.",
    "Mount Everest is the highest mountain above sea level, at 8,849 metres.",
    "I left my umbrella on the bus this morning.",
    "Error 404: the requested page could not be found on this server.",
    "Rising interest rates make mortgages more expensive for first-time buyers.",
    "The kids built a sandcastle with towers, a moat and a little bridge made of driftwood.",
    "Is it safe to swim in the lake after heavy rain?",
    "Vaccines train the immune system to recognise a pathogen without causing the disease.",
    "Please remember to bring your ID card to the exam.",
    "The painting was stolen from the gallery in 1990 and has never been recovered.",
    "Tokyo, the capital of Japan, is one of the most populous metropolitan areas in the world.",
    "Add two cups of flour, a pinch of salt and mix until the dough is smooth.",
    "The new smartphone has a larger battery but a slower processor than last year's model.",
    "Why does the sky look blue during the day and red at sunset?",
    "Our team migrated the database to a managed service to reduce maintenance work.",
    "The river burst its banks and flooded several villages downstream.",
    "He apologised for the misunderstanding and offered to pay for the damage.",
    "Electric cars are cheaper to run but still cost more to buy than petrol cars.",
    "The library is closed on public holidays and on Sunday mornings.",
    "A balanced diet includes vegetables, whole grains, protein and healthy fats.",
    "The defendant pleaded not guilty to all charges.",
    "Where can I find the user manual for this washing machine?",
    "Jupiter has dozens of moons, the largest of which is Ganymede.",
    "The concert was cancelled at the last minute because the singer fell ill.",
    "To install the package, run pip install followed by its name in a terminal.",
    "Wind turbines generate electricity from the kinetic energy of moving air.",
    "I think the second option is better, but it will take longer to implement.",
    "The museum offers free guided tours every Saturday at eleven.",
    "Lisbon is built on seven hills overlooking the estuary of the Tagus river.",
    "The ancient Romans built aqueducts to carry water into their cities.",
    "Thanks for your help yesterday, the presentation went really well!",
    "The stock market fell sharply after the announcement.",
    "Translate this sentence into French and Spanish, please.",
    "Cats sleep for twelve to sixteen hours a day on average.",
    "The contract may be terminated by either party with thirty days' written notice.",
    "Heavy snowfall is expected in the mountains tonight, with strong winds on the passes.",
    "Which programming language should I learn first if I want to build websites?",
    "The bridge, opened in 1937, spans the strait between the bay and the ocean.",
)
VALIDATION_TEXTS: Final = (
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse across the open field.",
    "Two men pushed carts through the woods.",
    "How many people live in Berlin?",
    "Berlin has a population of 3,520,031 registered inhabitants in an area of 891 km².",
    "New York City is famous for the Metropolitan Museum of Art.",
    "Mix the butter and sugar, then fold in the eggs one at a time.",
    "The server returned an unexpected status code after the deployment.",
    "Quantum computers use qubits, which can represent zero and one at the same time.",
    "My neighbour's dog barks every time the postman comes.",
    "Interest in renewable energy has grown steadily over the past decade.",
    "Could you send me the slides from this morning's meeting?",
    "The referee showed him a red card in the final minute of the match.",
    "Glaciers in the Alps have lost more than half of their volume since 1900.",
    "She plays the violin in a string quartet on weekends.",
    "Remember to water the tomatoes twice a week during the summer.",
    "The train to Manchester departs from platform four at half past nine.",
    "Scientists discovered a new species of frog in the rainforest of Ecuador.",
    "Our internet connection keeps dropping every evening around eight.",
    "The novel tells the story of a family across three generations.",
    "Hospitals are struggling to recruit enough nurses and doctors.",
    "What time does the pharmacy open on Sundays?",
    "Hi.",
    "Thanks a lot!",
    "Berlin",
)


def paragraphs(texts: Sequence[str], per: int) -> list[str]:
    """Consecutive ``texts`` joined ``per`` at a time: longer inputs from real sentences."""
    return [" ".join(texts[i : i + per]) for i in range(0, len(texts), per)]
